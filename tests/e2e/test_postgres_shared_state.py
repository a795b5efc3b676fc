"""State shared by brokers over one PostgreSQL database, each through real processes.

What one broker keeps for its own tasks must hold for the cluster: a redelivered task goes to
the front of the pool, queue depths and ``max_queued`` count the pool, purge, forget and the
dead-letter commands act wherever the tasks are, a running task's STARTED and custom states
read the same on every broker, and a repeated task id or idempotency key is recognised by
any broker.
"""

from __future__ import annotations

import pytest

from client.result import AsyncResult
from tests.e2e.conftest import Started
from tests.e2e.test_postgres_cluster import TASKS, _app, _brokers
from tests.support import WorkerProcess

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
    assert done == sorted(done), "the redelivered task ran after tasks queued behind it"
