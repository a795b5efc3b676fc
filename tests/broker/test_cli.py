"""The real daemon as a subprocess: listening line, health over gRPC, admin CLI, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from celeriac.v1 import client_pb2_grpc
from tests.broker.helpers import submit

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


@contextlib.contextmanager
def _serving(*flags: str) -> Iterator[subprocess.Popen[str]]:
    """`python -m broker serve --port 0 FLAGS`, killed on the way out if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "serve", "--port", "0", "--memory-only", *flags],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def daemon() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with _serving("--shutdown-grace", "1") as process:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert "memory-only mode" in first, f"unexpected first line: {first!r}"
        match = re.search(r"listening on (\S+)", process.stderr.readline())
        assert match
        yield process, match.group(1)


def test_serve_answers_health_and_exits_cleanly_on_sigterm(
    daemon: tuple[subprocess.Popen[str], str],
) -> None:
    process, address = daemon
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        client_pb2_grpc.TaskServiceStub(channel).Submit(submit(queue="emails"), timeout=TIMEOUT)
    queues = _admin(address, "queues")
    assert re.search(r"emails\s+1\s+0\s+0\s+0", queues.stdout), queues.stdout
    purged = _admin(address, "purge", "emails", "--force").stdout.strip()
    assert purged == "purged 1 task(s) from emails"
    assert "0 of 0 dead letter(s)" in _admin(address, "dead", "list").stdout
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == 0


def test_the_daemon_thaws_and_collects_everything_at_its_interval() -> None:
    with _serving("--gc-thaw-interval", "0.2") as process:
        assert process.stderr is not None
        lines = iter(process.stderr.readline, "")
        assert any("full garbage collection:" in line for line in lines)
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0


def test_admin_cli_reports_an_unreachable_broker() -> None:
    result = _admin("127.0.0.1:1", "workers", check=False)
    assert result.returncode == 3
    assert "UNAVAILABLE" in result.stderr


def _admin(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args, "--broker", address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=check,
    )
