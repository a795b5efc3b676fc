"""The broker and the worker pick gRPC's socket layer before grpc loads (broker/grpc_stack.py).

Each check runs a fresh interpreter: grpc reads GRPC_EXPERIMENTS once, at its import, and this
test process imported grpc long ago.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from broker.grpc_stack import LEGACY_TCP_EXPERIMENTS
from tests.support import ROOT

# Import the package the way `python -m PACKAGE` does, then make grpc start its core.
PROBE = (
    "import os; import {package}; import grpc; "
    "grpc.insecure_channel('127.0.0.1:1').close(); "
    "print(os.environ['GRPC_EXPERIMENTS'])"
)


def _probe(package: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "GRPC_EXPERIMENTS"}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.parametrize("package", ["broker", "worker"])
def test_daemon_packages_select_the_legacy_tcp_layer_before_grpc_loads(package: str) -> None:
    probe = _probe(package)
    assert probe.stdout.strip() == LEGACY_TCP_EXPERIMENTS
    # grpc logs this for a name it does not know, and then ignores the name.
    assert "Unknown experiment" not in probe.stderr


@pytest.mark.parametrize("package", ["broker", "worker"])
def test_an_operators_own_grpc_experiments_win(package: str) -> None:
    probe = _probe(package, GRPC_EXPERIMENTS="-event_engine_dns")
    assert probe.stdout.strip() == "-event_engine_dns"


def test_the_client_library_leaves_the_users_grpc_alone() -> None:
    # It runs inside the user's process, which may fork (see broker/grpc_stack.py).
    probe = subprocess.run(
        [sys.executable, "-c", "import os, client; print(os.environ.get('GRPC_EXPERIMENTS'))"],
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if key != "GRPC_EXPERIMENTS"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert probe.stdout.strip() == "None"
