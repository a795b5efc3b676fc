"""A worker's shutdown ends every process it started: pool children, the fork server, the
resource tracker. Each run goes through tests.orphans, which adopts whatever the command
leaves behind and names it."""

from __future__ import annotations

import signal
import sys

import pytest

from tests.support import BrokerProcess, LoggedProcess, run_python


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_process_pool_worker_leaves_no_process_behind(
    broker_process: BrokerProcess, signum: signal.Signals
) -> None:
    address = broker_process.address
    worker = [sys.executable, "-m", "worker", "--tasks", "tests.e2e.tasks", "--broker", address]
    with LoggedProcess(["-m", "tests.orphans", *worker, "--concurrency", "2"]) as watched:
        watched.wait_for_line("worker ready")
        watched.signal(signum)
        assert watched.wait() == 0, watched.output
        assert "left behind" not in watched.output, watched.output


def test_make_demos_flow_leaves_no_process_behind() -> None:
    result = run_python("-m", "tests.orphans", sys.executable, "examples/demo.py", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left behind" not in result.stdout, result.stdout


def test_a_worker_signalled_while_its_pool_starts_stops_warm_and_leaves_nothing(
    broker_process: BrokerProcess,
) -> None:
    address = broker_process.address
    tasks = "tests.e2e.slow_start_tasks"
    worker = [sys.executable, "-m", "worker", "--tasks", tasks, "--broker", address]
    with LoggedProcess(["-m", "tests.orphans", *worker, "--concurrency", "2"]) as watched:
        watched.wait_for_line("CHILD INITIALISING")
        watched.signal(signal.SIGTERM)
        assert watched.wait() == 0, watched.output
        assert "left behind" not in watched.output, watched.output
        assert "worker ready" not in watched.output, watched.output
