"""Celery's signals in real processes: publish signals in the producer, task and worker signals
in the worker and its pool children."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from client import Celeriac
from client.signals import after_task_publish, before_task_publish
from tests.e2e import signalled_tasks
from tests.support import BrokerProcess, WorkerProcess


@pytest.fixture
def signalled(broker_process: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celeriac]:
    monkeypatch.setenv("CELERIAC_BROKER", broker_process.address)
    app = signalled_tasks.app
    app.conf = Celeriac("signals-client", broker=broker_process.address).conf
    yield app
    app.close()


def test_a_publish_receiver_adds_a_header_that_reaches_the_task(
    signalled: Celeriac, broker_process: BrokerProcess
) -> None:
    published: list[tuple[object, object]] = []

    @before_task_publish.connect
    def inject(headers: dict[str, str], **kwargs: object) -> None:
        headers["traceparent"] = f"00-trace-of-{headers['id']}-01"

    @after_task_publish.connect(sender="tests.e2e.signalled_tasks.traced")
    def sent(routing_key: str = "", body: object = None, **kwargs: object) -> None:
        published.append((routing_key, body))

    try:
        with WorkerProcess(broker_process.address, "tests.e2e.signalled_tasks", "--pool", "solo"):
            result = signalled_tasks.traced.delay(1)
            headers = result.get(timeout=20)
    finally:
        before_task_publish.disconnect(inject)
        after_task_publish.disconnect(sent, sender="tests.e2e.signalled_tasks.traced")
    assert headers == {"traceparent": f"00-trace-of-{result.id}-01"}
    assert published == [("default", ((1,), {}, {}))]


def test_task_and_worker_signals_fire_in_the_processes_that_run_them(
    signalled: Celeriac, broker_process: BrokerProcess
) -> None:
    worker = WorkerProcess(
        broker_process.address, "tests.e2e.signalled_tasks", "--concurrency", "1"
    )
    with worker:
        worker.wait_for_line("SIGNAL worker_process_init")
        worker.wait_for_line("SIGNAL worker_ready sender=Worker")
        ok = signalled_tasks.traced.delay(2)
        ok.get(timeout=20)
        worker.wait_for_line(f"SIGNAL task_postrun {ok.id} SUCCESS")
        failed = signalled_tasks.traced.delay(0)
        with pytest.raises(ZeroDivisionError):
            failed.get(timeout=20)
        worker.wait_for_line(f"SIGNAL task_postrun {failed.id} FAILURE")
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
        worker.wait_for_line("SIGNAL worker_shutdown")
    lines = [line for line in worker.output.splitlines() if "SIGNAL task_" in line]
    assert [line.split(" pid=")[0].split("SIGNAL ")[1] for line in lines] == [
        f"task_prerun {ok.id}",
        "task_success",
        f"task_postrun {ok.id} SUCCESS",
        f"task_prerun {failed.id}",
        f"task_failure {failed.id} ZeroDivisionError('by zero')",
        f"task_postrun {failed.id} FAILURE",
    ]
    # Task signals come from the pool child, not from the worker's own process.
    pids = {line.rsplit("pid=", 1)[1] for line in lines}
    assert len(pids) == 1 and pids != {str(worker.process.pid)} and str(os.getpid()) not in pids
