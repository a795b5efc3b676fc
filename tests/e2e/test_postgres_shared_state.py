"""State shared by brokers over one PostgreSQL database, each through real processes.

What one broker keeps for its own tasks must hold for the cluster: a redelivered task goes to
the front of the pool, queue depths and ``max_queued`` count the pool, purge, forget and the
dead-letter commands act wherever the tasks are, a running task's STARTED and custom states
read the same on every broker, and a repeated idempotency key is recognised by any broker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.errors import QueueFull
from client.result import AsyncResult
from tests.broker.test_admin_cli import admin, queues
from tests.e2e.conftest import Started
from tests.e2e.test_postgres_cluster import TASKS, _app, _brokers
from tests.support import WorkerProcess, wait_until

SOLO = ("--pool", "solo", "--prefetch-max", "0")


@pytest.mark.timeout(120)
def test_a_task_redelivered_after_its_worker_died_goes_to_the_front_of_the_pool(
    postgres_url: str, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    first = WorkerProcess(a.address, TASKS, "--queues", "line", *SOLO)
    cleanup.append(first)
    app = _app(a.address, cleanup)
    redelivered = app.send_task(f"{TASKS}.block_first_attempt", args=("m",), queue="line")
    first.wait_for_line(f"BLOCKING {redelivered.id}")
    waiting = [app.send_task(f"{TASKS}.add", args=(i, 1), queue="line") for i in range(3)]
    first.stop_hard()
    a.wait_for_line(f"task requeued id={redelivered.id}")

    second = WorkerProcess(b.address, TASKS, "--queues", "line", *SOLO)
    cleanup.append(second)
    reader = _app(b.address, cleanup)
    assert AsyncResult(redelivered.id, app=reader).get(timeout=30) == "done on attempt 2"
    assert [AsyncResult(t.id, app=reader).get(timeout=30) for t in waiting] == [1, 2, 3]
    done = [AsyncResult(t.id, app=reader).date_done for t in (redelivered, *waiting)]
    assert None not in done
    assert done == sorted(d for d in done if d), "the redelivered task ran after others"


@pytest.mark.timeout(120)
def test_queue_depths_and_max_queued_count_the_pool(
    postgres_url: str, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup, "--max-queued", "4")
    on_a, on_b = _app(a.address, cleanup), _app(b.address, cleanup)
    for i in range(4):  # no worker anywhere: each goes to the pool
        on_a.send_task(f"{TASKS}.add", args=(i, 1), queue="jobs")

    assert queues(b.address)["jobs"]["ready"] == 4  # counted now, on a broker holding none
    with pytest.raises(QueueFull) as refused:
        on_b.send_task(f"{TASKS}.add", args=(9, 9), queue="jobs")
    assert "shared pool 4" in str(refused.value)


def _dead_ids(address: str) -> set[str]:
    listed = admin(address, "dead", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {letter["task_id"] for letter in json.loads(listed.stdout)["dead_letters"]}


@pytest.mark.timeout(120)
def test_purge_forget_and_dead_letters_act_on_tasks_other_brokers_hold(
    postgres_url: str, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    worker = WorkerProcess(a.address, TASKS, "--queues", "jobs", "--pool", "solo")
    cleanup.append(worker)
    on_a, on_b = _app(a.address, cleanup), _app(b.address, cleanup)
    failed = [on_a.send_task(f"{TASKS}.fail", args=(f"boom {i}",), queue="jobs") for i in range(3)]
    for task in failed:
        task.get(timeout=20, propagate=False)
    done = on_a.send_task(f"{TASKS}.add", args=(2, 2), queue="jobs")
    assert done.get(timeout=20) == 4
    pooled = [on_a.send_task(f"{TASKS}.add", args=(i, i), queue="nobody") for i in range(2)]

    purged = admin(b.address, "purge", "nobody", "--force", "--json")
    assert json.loads(purged.stdout)["purged"] == 2, purged.stderr
    assert {AsyncResult(t.id, app=on_a).state for t in pooled} == {"REVOKED"}

    AsyncResult(done.id, app=on_b).forget()
    wait_until(lambda: AsyncResult(done.id, app=on_a).state == "UNKNOWN")  # gone from a too

    assert _dead_ids(b.address) == {t.id for t in failed}  # a's dead letters, listed on b
    lines = worker.line_count()
    assert admin(b.address, "dead", "requeue", failed[0].id).returncode == 0
    worker.wait_for_line(failed[0].id, start=lines)  # run again by a's worker
    assert admin(b.address, "dead", "purge", failed[1].id).returncode == 0
    wait_until(lambda: _dead_ids(a.address) == {failed[0].id, failed[2].id}, timeout=30)


@pytest.mark.timeout(120)
def test_a_custom_state_and_its_meta_read_the_same_on_every_broker(
    postgres_url: str, tmp_path: Path, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    worker = WorkerProcess(a.address, TASKS, "--queues", "jobs", "--pool", "solo")
    cleanup.append(worker)
    release = tmp_path / "release"
    running = _app(a.address, cleanup).send_task(
        f"{TASKS}.reports_progress", args=(str(release),), queue="jobs"
    )
    elsewhere = AsyncResult(running.id, app=_app(b.address, cleanup))
    wait_until(lambda: elsewhere.state == "PROGRESS")
    assert elsewhere.info == {"done": 1, "total": 2}
    release.touch()
    assert elsewhere.get(timeout=20) == "finished"


@pytest.mark.timeout(120)
def test_a_repeated_idempotency_key_is_recognised_by_another_broker(
    postgres_url: str, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    on_a, on_b = _app(a.address, cleanup), _app(b.address, cleanup)
    first = on_a.send_task(f"{TASKS}.add", args=(1, 1), queue="jobs", idempotency_key="k-1")
    again = on_b.send_task(f"{TASKS}.add", args=(5, 5), queue="jobs", idempotency_key="k-1")
    assert again.id == first.id
    assert queues(b.address)["jobs"]["ready"] == 1  # the repeat made no task

    worker = WorkerProcess(b.address, TASKS, "--queues", "jobs", "--pool", "solo")
    cleanup.append(worker)
    assert AsyncResult(first.id, app=on_b).get(timeout=20) == 2  # the first's arguments
    # Within its window the key still names the finished task, on any broker.
    assert on_b.send_task(f"{TASKS}.add", args=(9, 9), idempotency_key="k-1").id == first.id


@pytest.mark.timeout(120)
def test_a_worker_that_moves_to_another_broker_keeps_the_task_it_runs(
    postgres_url: str, tmp_path: Path, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    worker = WorkerProcess(f"{a.address},{b.address}", TASKS, "--pool", "thread", "-c", "1")
    cleanup.append(worker)
    release = tmp_path / "release"
    running = _app(a.address, cleanup).send_task(f"{TASKS}.wait_for_release", args=(str(release),))
    worker.wait_for_line(f"RUNNING {running.id}")
    a.stop_hard()
    b.wait_for_line(r"took over 1 running tasks of worker")  # from its Hello, before a's timeout

    release.touch()
    assert AsyncResult(running.id, app=_app(b.address, cleanup)).get(timeout=20) == "released"
    assert worker.output.count(f"RUNNING {running.id}") == 1  # its outcome was kept: ran once
