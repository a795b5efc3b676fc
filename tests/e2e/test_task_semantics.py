"""Issue 3's semantics through the real path: they live at the broker and hold across workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2
from client import AsyncResult, Celeriac, group
from client.errors import TaskExpired, TaskRevokedError
from tests.e2e import tasks
from tests.support import ROOT, BrokerProcess, WorkerProcess, wait_until

StartWorker = Callable[..., WorkerProcess]


def test_autoretry_retries_at_the_broker_until_the_task_succeeds(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker()
    result = tasks.flaky.delay(2)
    assert result.get(timeout=20) == 2


def test_retries_run_out_into_a_failure_and_a_dead_letter(
    app: Celeriac, start_worker: StartWorker, broker_process: BrokerProcess
) -> None:
    start_worker()
    result = tasks.explicit_retry.delay()
    with pytest.raises(KeyError, match="still missing"):
        result.get(timeout=20)
    listing = subprocess.run(
        [sys.executable, "-m", "broker", "dead", "list", "--broker", broker_process.address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert result.id in listing.stdout


def test_countdown_waits_at_the_broker_not_in_the_worker(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker()
    submitted = datetime.now(UTC)
    result = tasks.add.apply_async((1, 1), countdown=0.5)
    assert result.get(timeout=20) == 2
    assert result.date_done is not None and result.date_done >= submitted + timedelta(seconds=0.5)


def test_a_task_that_expires_while_queued_never_runs_and_is_revoked(app: Celeriac) -> None:
    result = tasks.add.apply_async((1, 1), queue="nobody", expires=0.2)
    with pytest.raises(TaskExpired, match="expired"):
        result.get(timeout=20)
    assert result.state == "REVOKED"
    with pytest.raises(TaskRevokedError):  # what Celery code catches
        result.get(timeout=1)


def test_hard_time_limit_kills_only_that_task_and_the_worker_goes_on(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker("--concurrency", "1")
    result = tasks.hangs_past_hard_limit.delay()
    with pytest.raises(Exception, match=r"TimeLimitExceeded|time limit"):
        result.get(timeout=30)
    assert tasks.add.delay(3, 3).get(timeout=20) == 6


def test_soft_time_limit_can_be_caught_to_clean_up(
    app: Celeriac, start_worker: StartWorker
) -> None:
    start_worker()
    assert tasks.cleans_up_on_soft_limit.delay().get(timeout=20) == "cleaned up"


def test_a_revoked_queued_task_never_runs_even_after_workers_start(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = str(tmp_path / "ran")
    doomed = tasks.record.apply_async((log, "doomed"), queue="later")
    doomed.revoke()
    assert doomed.state == "REVOKED"
    start_worker("--queues", "later")
    assert tasks.record.apply_async((log, "after"), queue="later").get(timeout=20) == "after"
    assert Path(log).read_text().split() == ["after"]
    with pytest.raises(TaskRevokedError):
        doomed.get(timeout=5)


def test_revoke_with_terminate_kills_a_running_task(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker("--concurrency", "1")
    result = tasks.wait_for_release.delay(str(tmp_path / "never"))
    worker.wait_for_line(f"RUNNING {result.id}")
    result.revoke(terminate=True)
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    assert tasks.add.delay(1, 2).get(timeout=20) == 3


def test_revoking_a_group_kills_all_its_running_tasks_through_one_cancel(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker("--concurrency", "3")
    running = group(tasks.wait_for_release.s(str(tmp_path / "never")) for _ in range(3))
    result = running.apply_async()
    for member in result.results:
        worker.wait_for_line(f"RUNNING {member.id}")
    assert result.revoke(terminate=True) == ["cancel-sent"] * 3
    for member in result.results:
        with pytest.raises(TaskRevokedError):
            member.get(timeout=20)
    assert tasks.add.delay(1, 2).get(timeout=20) == 3


def test_higher_priority_runs_first_within_a_queue(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = str(tmp_path / "order")
    submitted = [
        tasks.record.apply_async((log, f"p{priority}"), queue="prio", priority=priority)
        for priority in (0, 5, 9, 1)
    ]
    start_worker("--queues", "prio", "--pool", "solo", "--concurrency", "1")
    for result in submitted:
        result.get(timeout=20)
    assert Path(log).read_text().split() == ["p9", "p5", "p1", "p0"]


def test_a_repeated_task_id_or_idempotency_key_runs_once(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    log = str(tmp_path / "runs")
    first = tasks.record.apply_async((log, "a"), task_id="fixed-id", queue="dedup")
    second = tasks.record.apply_async((log, "a"), task_id="fixed-id", queue="dedup")
    keyed = [
        tasks.record.apply_async((log, "k"), idempotency_key="k1", queue="dedup") for _ in range(3)
    ]
    assert second.id == first.id
    assert len({r.id for r in keyed}) == 1
    start_worker("--queues", "dedup")
    first.get(timeout=20)
    keyed[0].get(timeout=20)
    assert sorted(Path(log).read_text().split()) == ["a", "k"]


def test_update_state_is_visible_to_clients_while_the_task_runs(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    release = tmp_path / "release"
    result = tasks.reports_progress.delay(str(release))
    wait_until(lambda: result.state == "PROGRESS")
    assert result.info == {"done": 1, "total": 2}
    release.touch()
    assert result.get(timeout=20) == "finished"


def test_a_worker_killed_during_a_retry_backoff_loses_nothing(tmp_path: Path) -> None:
    with BrokerProcess("--lease-grace", "0.5") as broker:
        app = Celeriac("backoff", broker=broker.address)
        app.tasks.update(tasks.app.tasks)
        with WorkerProcess(broker.address) as worker:
            result = app.send_task("tests.e2e.tasks.flaky", args=(1,))
            wait_until(lambda: result.state in {"RETRY", "SUCCESS"})
            worker.stop_hard()
        with WorkerProcess(broker.address):
            assert result.get(timeout=20) == 1
        app.close()


def test_a_hard_time_limit_hit_while_holding_a_lock_releases_it(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker("--concurrency", "2")
    lock = str(tmp_path / "lock")
    held = tasks.holds_lock_past_hard_limit.delay(lock)
    worker.wait_for_line(f"LOCKED {lock}")
    assert tasks.try_lock.delay(lock).get(timeout=20) == "still held"
    with pytest.raises(Exception, match=r"TimeLimitExceeded|time limit"):
        held.get(timeout=30)
    # The process pool killed the child that held the lock, so the OS released it.
    assert tasks.try_lock.delay(lock).get(timeout=20) == "acquired"


def test_dead_letters_can_be_requeued_and_purged_from_the_cli(
    app: Celeriac, start_worker: StartWorker, broker_process: BrokerProcess
) -> None:
    start_worker()
    result = tasks.fail.delay("for the dead-letter set")
    with pytest.raises(ValueError, match="dead-letter"):
        result.get(timeout=20)

    def admin(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "broker", *args, "--broker", broker_process.address],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert result.id in admin("dead", "list")
    assert "requeued 1" in admin("dead", "requeue", result.id)
    # Requeued as a fresh attempt with its arguments: it runs (and fails) again.
    wait_until(lambda: result.id in admin("dead", "list"))
    assert result.state == "FAILURE"
    assert "purged 1" in admin("dead", "purge", "--all")
    assert result.id not in admin("dead", "list")


def test_ignore_result_forget_and_result_expiry(app: Celeriac, start_worker: StartWorker) -> None:
    start_worker()
    ignored = tasks.add.apply_async((1, 2), ignore_result=True)
    assert ignored.get(timeout=20) is None
    assert ignored.state == "SUCCESS"
    kept = tasks.add.delay(2, 2)
    assert kept.get(timeout=20) == 4
    kept.forget()
    assert kept.state == "UNKNOWN"
    short = tasks.add.apply_async((3, 3), result_ttl=0.3)
    assert short.get(timeout=20) == 6
    # A fresh handle asks the broker (a handle caches a finished result, as Celery's does).
    wait_until(lambda: AsyncResult(short.id, app=app).state == "UNKNOWN")


def test_the_routing_table_sends_a_task_to_its_queue(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    app.conf.task_routes = {"tests.e2e.tasks.rec*": {"queue": "routed"}}  # as in Celery
    log = str(tmp_path / "routed")
    result = tasks.record.delay(log, "via the routing table")
    assert result.queue == "routed"
    start_worker("--queues", "routed")
    assert result.get(timeout=20) == "via the routing table"


def test_a_class_based_task_hook_runs_in_the_worker_process(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    audit = tmp_path / "audit.txt"
    result = tasks.audited_divide.delay(1, 0, audit=str(audit))
    with pytest.raises(ZeroDivisionError):
        result.get(timeout=20)
    # The hook ran before the outcome was sent, so the file is there once get() has raised.
    task_id, error, pid, request = audit.read_text().split("|")
    assert (task_id, error, request) == (
        result.id,
        "ZeroDivisionError('division by zero')",
        result.id,
    )
    assert int(pid) != os.getpid()


def test_every_failure_reads_with_a_language_neutral_kind(
    app: Celeriac, start_worker: StartWorker, broker_process: BrokerProcess
) -> None:
    start_worker("--time-limit", "1")
    failed = tasks.fail.delay("boom")
    timed_out = tasks.hangs_past_hard_limit.delay()
    expired = tasks.add.apply_async((1, 1), queue="nobody", expires=0.2)
    unknown = app.send_task("tests.e2e.tasks.no_such_task")
    for result in (failed, timed_out, expired, unknown):
        result.get(timeout=30, propagate=False)
    # What a client in any other language reads: TaskResult.error.kind.
    with grpc.insecure_channel(broker_process.address) as channel:
        stub = client_pb2_grpc.TaskServiceStub(channel)
        request = client_pb2.GetResultsRequest(
            task_ids=[failed.id, timed_out.id, expired.id, unknown.id]
        )
        kinds = [r.error.kind for r in stub.GetResults(request, timeout=10).results]
    assert kinds == [
        tasks_pb2.TASK_ERROR_KIND_USER_ERROR,
        tasks_pb2.TASK_ERROR_KIND_TIMEOUT,
        tasks_pb2.TASK_ERROR_KIND_EXPIRED,
        tasks_pb2.TASK_ERROR_KIND_NOT_REGISTERED,
    ]
