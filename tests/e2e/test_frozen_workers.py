"""Workers that freeze instead of dying (SIGSTOP: a hung host, a paused VM, a cut network).

Their connection stays open, so only liveness checks notice them: gRPC keepalive pings for
every connection, and the broker's own pings for workers that hold tasks. Either way the broker
drops the worker within its ping timeout and a busy worker's task runs elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

import pytest

from client import Celeriac
from tests.e2e import tasks
from tests.support import BrokerProcess, WorkerProcess

StartWorker = Callable[..., WorkerProcess]
PING_TIMEOUT = 1.0


@pytest.fixture
def broker_process() -> Iterator[BrokerProcess]:
    """A broker that pings every 0.2 s and gives up on a silent worker after 1 s."""
    args = ("--ping-interval", "0.2", "--ping-timeout", str(PING_TIMEOUT), "--lease-grace", "0.3")
    with BrokerProcess(*args) as broker:
        yield broker


@contextlib.contextmanager
def frozen(worker: WorkerProcess) -> Iterator[None]:
    """Stop the worker and its pool children (SIGSTOP), and let them go again afterwards."""
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


def disconnected(worker: WorkerProcess) -> str:
    return rf"worker disconnected worker=\S+:{worker.process.pid} "


def test_a_frozen_idle_worker_is_dropped_by_keepalive(
    app: Celeriac, broker_process: BrokerProcess, start_worker: StartWorker
) -> None:
    idle = start_worker("--concurrency", "1")
    assert tasks.add.delay(1, 2).get(timeout=20) == 3  # connected and done: now idle
    since = len(broker_process.lines)
    with frozen(idle):
        # Nothing of Python runs in the broker for an idle worker: gRPC's keepalive notices.
        broker_process.wait_for_line(disconnected(idle), timeout=10 * PING_TIMEOUT, start=since)
        start_worker("--concurrency", "1")
        assert tasks.add.delay(2, 3).get(timeout=20) == 5


def test_a_frozen_busy_worker_is_dropped_and_its_task_runs_elsewhere(
    app: Celeriac, broker_process: BrokerProcess, start_worker: StartWorker
) -> None:
    busy = start_worker("--concurrency", "1")
    result = tasks.block_first_attempt.delay("x")
    busy.wait_for_line(f"BLOCKING {result.id}")
    since = len(broker_process.lines)
    with frozen(busy):
        broker_process.wait_for_line(disconnected(busy), timeout=10 * PING_TIMEOUT, start=since)
        start_worker("--concurrency", "1")
        assert result.get(timeout=30) == "done on attempt 2"
