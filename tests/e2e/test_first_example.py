"""The whole path with real processes: broker daemon, worker processes, Python client."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from client import AsyncResult, Celeriac, group
from client.errors import NotRegistered, SerializationError
from tests.e2e import tasks
from tests.support import ROOT, BrokerProcess, WorkerProcess

StartWorker = Callable[..., WorkerProcess]


def test_add_delay_returns_a_result_with_the_celery_api(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker("--concurrency", "2")
    result = tasks.add.delay(4, 4)
    assert result.task_id == result.id
    assert result.get(timeout=20) == 8
    assert result.ready() and result.successful() and not result.failed()
    assert result.state == "SUCCESS"
    assert result.result == 8
    assert AsyncResult(result.id, app=app).get(timeout=5, interval=0.5) == 8


def test_default_process_pool_runs_tasks_in_several_child_processes(
    app: Celeriac, start_worker: StartWorker
) -> None:
    worker = start_worker("--concurrency", "2")
    pids = set(group(tasks.pid.s() for _ in range(40)).apply_async().get(timeout=30))
    assert worker.process.pid not in pids
    assert len(pids) == 2


def test_a_task_in_a_pool_child_can_submit_tasks(app: Celeriac, start_worker: StartWorker) -> None:
    start_worker("--concurrency", "2")
    ids = tasks.fan_out.delay(5).get(timeout=20)
    assert [AsyncResult(task_id, app=app).get(timeout=20) for task_id in ids] == [0, 2, 4, 6, 8]


@pytest.mark.parametrize("pool", ["thread", "async", "solo"])
def test_every_pool_runs_sync_and_async_tasks(
    app: Celeriac, start_worker: StartWorker, pool: str
) -> None:
    start_worker("--pool", pool, "--concurrency", "2")
    assert tasks.add.delay(2, 3).get(timeout=20) == 5
    assert tasks.async_add.delay(2, 5).get(timeout=20) == 7


def test_a_task_error_becomes_failure_with_type_message_and_traceback(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker()
    result = tasks.fail.delay("boom")
    with pytest.raises(ValueError, match="boom"):
        result.get(timeout=20)
    assert result.state == "FAILURE" and result.failed()
    assert "ValueError" in (result.traceback or "") and "raise ValueError" in (
        result.traceback or ""
    )
    assert isinstance(result.get(timeout=5, propagate=False), ValueError)


def test_unknown_task_name_fails_that_task_and_the_worker_carries_on(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker()
    unknown = app.send_task("tests.e2e.tasks.no_such_task", args=(1,))
    with pytest.raises(NotRegistered, match="no_such_task"):  # as in Celery
        unknown.get(timeout=20)
    assert tasks.add.delay(1, 1).get(timeout=20) == 2


def test_non_serializable_arguments_are_refused_before_sending(app: Celeriac) -> None:
    with pytest.raises(SerializationError, match="object"):
        tasks.add.delay(object(), 1)


def test_a_non_serializable_result_fails_the_task_clearly(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker()
    result = tasks.returns_a_set.delay()
    with pytest.raises(Exception, match="set"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    assert tasks.add.delay(2, 2).get(timeout=20) == 4


def test_unknown_task_id_is_not_reported_as_pending(app: Celeriac) -> None:
    assert AsyncResult("never-submitted", app=app).state == "UNKNOWN"
    queued = tasks.add.apply_async((1, 2), queue="nobody-consumes-this")
    assert queued.state == "PENDING"


def test_worker_killed_mid_task_has_its_task_run_again_elsewhere(
    app: Celeriac, start_worker: StartWorker
) -> None:
    first = start_worker("--concurrency", "1")
    result = tasks.block_first_attempt.delay("x")
    first.wait_for_line(f"BLOCKING {result.id}")
    first.stop_hard()
    start_worker("--concurrency", "1")
    assert result.get(timeout=30) == "done on attempt 2"


def test_sigterm_lets_the_running_task_finish_and_the_worker_exit_cleanly(
    app: Celeriac, start_worker: StartWorker, tmp_path: object
) -> None:
    worker = start_worker("--concurrency", "1")
    release = f"{tmp_path}/release"
    result = tasks.wait_for_release.delay(release)
    worker.wait_for_line(f"RUNNING {result.id}")
    worker.signal(signal.SIGTERM)
    worker.wait_for_line("shut", timeout=20)
    open(release, "w").close()
    assert result.get(timeout=20) == "released"
    assert worker.wait(30) == 0


def test_worker_survives_a_broker_restart(tmp_path: object) -> None:
    with BrokerProcess() as first_broker:
        address = first_broker.address
        port = int(address.rsplit(":", 1)[1])
        with WorkerProcess(address) as worker:
            app = Celeriac("restart", broker=address)
            app.tasks.update(tasks.app.tasks)
            assert app.send_task("tests.e2e.tasks.add", args=(1, 2)).get(timeout=20) == 3
            mark = worker.line_count()
            first_broker.stop()
            with BrokerProcess(port=port):
                worker.wait_for_line("worker reconnected", timeout=30, start=mark)
                assert app.send_task("tests.e2e.tasks.add", args=(2, 3)).get(timeout=20) == 5
            app.close()


def test_the_demo_runs_the_first_example_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "get(timeout=10): 8" in done.stdout
    assert "ZeroDivisionError" in done.stdout
    assert "[demo] done" in done.stdout
