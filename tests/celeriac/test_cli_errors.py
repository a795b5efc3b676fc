"""Bad values fail at start: one line on stderr, exit status 2, on every command line.

Each case runs the real program in a fresh process. Worker cases name a task module that does
not exist: the configuration must be refused before any module is imported.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.support import BrokerProcess, run_python

SERVE = ("-m", "broker", "serve")
WORKER = ("-m", "worker", "--tasks", "no_such_module")

CASES: list[tuple[tuple[str, ...], dict[str, str], str]] = [
    # broker serve
    ((*SERVE, "--port", "99999"), {}, "--port 99999 is out of range (0-65535)"),
    ((*SERVE, "--port", "-1"), {}, "--port -1 is out of range (0-65535)"),
    ((*SERVE, "--port", "http"), {}, "argument --port: invalid int value: 'http'"),
    ((*SERVE, "--max-results", "-5"), {}, "--max-results -5 must be at least 1"),
    ((*SERVE, "--result-ttl", "-1"), {}, "--result-ttl -1 must be greater than 0"),
    ((*SERVE, "--ping-interval", "0"), {}, "--ping-interval 0 must be greater than 0"),
    (
        (*SERVE, "--ping-timeout", "1"),
        {},
        "--ping-timeout 1 must be greater than the ping interval (2)",
    ),
    (
        (*SERVE, "--max-message-bytes", "1024"),
        {},
        "--max-message-bytes 1024 must be greater than the max payload bytes (1048576)",
    ),
    ((*SERVE, "--gc-thaw-interval", "0"), {}, "--gc-thaw-interval 0 must be greater than 0"),
    ((*SERVE, "--log-level", "loud"), {}, "--log-level loud is not a log level (debug, info"),
    ((*SERVE, "--loglevel", "loud"), {}, "--loglevel loud is not a log level"),
    ((*SERVE, "--host", "bad!host"), {}, "--host bad!host is not a host name or IP address"),
    ((*SERVE, "--no-such-flag"), {}, "unrecognized arguments: --no-such-flag"),
    (SERVE, {"CELERIAC_BROKER_PORT": "99999"}, "CELERIAC_BROKER_PORT=99999 is out of range"),
    (SERVE, {"CELERIAC_BROKER_MAX_QUEUED": "x"}, "CELERIAC_BROKER_MAX_QUEUED=x is not a valid int"),
    # worker
    ((*WORKER, "--broker", "h:99999"), {}, "--broker h:99999 has the port 99999, out of range"),
    ((*WORKER, "--broker", "http://h:1"), {}, "--broker http://h:1 has the unknown scheme"),
    ((*WORKER, "--concurrency", "0"), {}, "--concurrency 0 must be at least 1"),
    ((*WORKER, "-l", "loud"), {}, "-l loud is not a log level"),
    ((*WORKER, "--log-level", "loud"), {}, "--log-level loud is not a log level"),
    ((*WORKER, "--time-limit", "-1"), {}, "--time-limit -1 must be greater than 0"),
    ((*WORKER, "--prefetch-hold", "0"), {}, "--prefetch-hold 0 must be greater than 0"),
    ((*WORKER, "--queues", ","), {}, "--queues '' must not be empty"),
    ((*WORKER, "--pool", "fork"), {}, "argument --pool/-P: invalid choice: 'fork'"),
    (WORKER, {"CELERIAC_BROKER": "myhost:99999"}, "CELERIAC_BROKER=myhost:99999 has the port"),
    (WORKER, {"CELERIAC_WORKER_CONCURRENCY": "0"}, "CELERIAC_WORKER_CONCURRENCY=0 must be"),
    # admin commands
    (("-m", "broker", "queues", "--broker", "h:99999"), {}, "--broker h:99999 has the port"),
    (("-m", "broker", "workers"), {"CELERIAC_BROKER": "[::1"}, "CELERIAC_BROKER=[::1 is not"),
    (("-m", "broker", "dead", "list", "--limit", "-1"), {}, "--limit -1 must not be negative"),
    (("-m", "broker", "dead", "requeue"), {}, "dead requeue needs task ids or --all"),
]


@pytest.mark.parametrize(
    ("args", "env", "message"), CASES, ids=[" ".join((*c[0][1:], *c[1])) for c in CASES]
)
def test_a_bad_value_is_one_line_and_exit_status_2(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_python(*args, env={"CELERIAC_BROKER": "", **env})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.rstrip("\n")], result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert result.stdout == ""


def test_a_port_in_use_is_one_line_naming_it(broker_process: BrokerProcess) -> None:
    host, _, port = broker_process.address.rpartition(":")
    result = run_python("-m", "broker", "serve", "--host", host, "--port", port)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: cannot listen on {host}:{port}: the port is in use\n"


@pytest.mark.parametrize("program", ["broker", "worker"])
def test_version_is_the_package_version(program: str) -> None:
    result = run_python("-m", program, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"python -m {program} {metadata.version('celeriac')}\n"


@pytest.mark.parametrize("program", ["broker", "worker"])
def test_the_console_scripts_are_installed_and_name_themselves(program: str) -> None:
    script = Path(sys.executable).parent / f"celeriac-{program}"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"celeriac-{program} {metadata.version('celeriac')}\n"
    refused = subprocess.run(
        [str(script), "--no-such-flag"], capture_output=True, text=True, timeout=50, check=False
    )
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
