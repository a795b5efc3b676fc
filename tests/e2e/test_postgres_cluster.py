"""Several brokers sharing one PostgreSQL database, through real processes and a real server.

Three brokers with ``--shared``, two workers and clients on different brokers: a task
submitted to one broker runs on a worker attached to another and its result reaches a client
waiting on a third; kill -9 of a broker under load loses nothing accepted.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from client import Celeriac
from client.errors import BrokerUnavailable
from client.result import AsyncResult
from tests.e2e.conftest import Started
from tests.postgres import PostgresServer
from tests.support import BrokerProcess, WorkerProcess, run_python, wait_until

TASKS = "tests.e2e.tasks"


def _brokers(url: str, count: int, cleanup: list[Started], *extra: str) -> list[BrokerProcess]:
    migrated = run_python("-m", "broker", "migrate", "--store", url)
    assert migrated.returncode == 0, migrated.stderr
    flags = ("--store", url, "--shared", "--broker-timeout", "2", "--lease-grace", "0.5", *extra)
    brokers = [BrokerProcess(*flags) for _ in range(count)]
    cleanup.extend(brokers)
    for broker in brokers:
        broker.wait_for_line("sharing the database as broker")
    return brokers


def _app(address: str, cleanup: list[Started]) -> Celeriac:
    app = Celeriac("cluster", broker=address, connect_timeout=10)
    cleanup.append(app)
    return app


@pytest.mark.timeout(120)
def test_submitted_on_a_run_on_b_result_held_and_woken_on_c(
    postgres_url: str, tmp_path: Path, cleanup: list[Started]
) -> None:
    a, b, c = _brokers(postgres_url, 3, cleanup)
    on_b = WorkerProcess(b.address, TASKS, "--queues", "jobs", "--pool", "solo")
    on_c = WorkerProcess(c.address, TASKS, "--queues", "other", "--pool", "solo")
    cleanup += [on_b, on_c]
    release = tmp_path / "release"
    submitted = _app(a.address, cleanup).send_task(
        f"{TASKS}.wait_for_release", args=(str(release),), queue="jobs"
    )
    on_b.wait_for_line(f"RUNNING {submitted.id}")
    watcher = _app(c.address, cleanup)
    # Read from the database, where the running task's STARTED ack is written.
    wait_until(lambda: AsyncResult(submitted.id, app=watcher).state == "STARTED")

    got: list[object] = []
    waiting = threading.Thread(
        target=lambda: got.append(AsyncResult(submitted.id, app=watcher).get(timeout=30))
    )
    waiting.start()
    release.touch()
    waiting.join(40)
    assert got == ["released"]
    assert f"RUNNING {submitted.id}" not in on_c.output
    # The submitting broker's own session was pushed the result too.
    assert submitted.get(timeout=10) == "released"


@pytest.mark.timeout(120)
def test_kill_9_of_a_broker_under_load_loses_nothing(
    postgres_url: str, cleanup: list[Started]
) -> None:
    brokers = _brokers(postgres_url, 3, cleanup)
    every = ",".join(broker.address for broker in brokers)
    # Each worker lists every broker, its own first: it moves on when that one dies (keeping
    # the tasks it runs). A third knows only the broker about to die, and dies with it.
    workers = []
    for index, queues in ((0, "default"), (1, "default,pinned")):
        order = brokers[index:] + brokers[:index]
        addresses = ",".join(b.address for b in order)
        workers.append(WorkerProcess(addresses, TASKS, "--concurrency", "2", "--queues", queues))
    pinned = WorkerProcess(brokers[0].address, TASKS, "--queues", "pinned", "--pool", "thread")
    cleanup.extend([*workers, pinned])
    apps = [_app(f"{broker.address},{every}", cleanup) for broker in brokers]
    # A task running on the worker that dies with the broker: another broker takes it over.
    blocked = apps[0].send_task(f"{TASKS}.block_first_attempt", args=("m",), queue="pinned")
    pinned.wait_for_line(f"BLOCKING {blocked.id}")
    accepted: dict[str, int] = {}
    for round_ in range(10):
        for app in apps:
            accepted[app.send_task(f"{TASKS}.add", args=(round_, 1)).id] = round_ + 1
    brokers[0].stop_hard()
    pinned.stop_hard()
    for round_ in range(10, 20):
        for app in apps[1:]:
            accepted[app.send_task(f"{TASKS}.add", args=(round_, 1)).id] = round_ + 1
    reader = apps[2]
    results = {task_id: AsyncResult(task_id, app=reader).get(timeout=40) for task_id in accepted}
    assert results == accepted
    # Its lease came back after the broker timeout and the lease grace, and ran again.
    assert AsyncResult(blocked.id, app=reader).get(timeout=20) == "done on attempt 2"
    assert any(
        re.search(r"took over \d+ tasks from \w+: .*leased", broker.output)
        for broker in brokers[1:]
    )


@pytest.mark.timeout(120)
def test_a_revoke_sent_to_any_broker_reaches_the_task_wherever_it_is(
    postgres_url: str, tmp_path: Path, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    worker = WorkerProcess(a.address, TASKS, "--queues", "busy", "--pool", "solo")
    cleanup.append(worker)
    on_a, on_b = _app(a.address, cleanup), _app(b.address, cleanup)
    pooled = on_a.send_task(f"{TASKS}.add", args=(1, 1), queue="nobody")  # no worker: the pool
    running = on_a.send_task(
        f"{TASKS}.wait_for_release", args=(str(tmp_path / "never"),), queue="busy"
    )
    worker.wait_for_line(f"RUNNING {running.id}")

    AsyncResult(pooled.id, app=on_b).revoke()
    AsyncResult(running.id, app=on_b).revoke(terminate=True)
    AsyncResult(pooled.id, app=on_a).get(timeout=20, propagate=False)
    assert AsyncResult(pooled.id, app=on_a).state == "REVOKED"
    AsyncResult(running.id, app=on_b).get(timeout=20, propagate=False)
    assert AsyncResult(running.id, app=on_b).state == "REVOKED"


@pytest.mark.timeout(120)
def test_a_database_restart_is_ridden_out_by_every_broker(
    postgres_server: PostgresServer, postgres_url: str, cleanup: list[Started]
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    worker = WorkerProcess(b.address, TASKS, "--pool", "solo")
    cleanup.append(worker)
    app = _app(a.address, cleanup)
    assert app.send_task(f"{TASKS}.add", args=(1, 1)).get(timeout=20) == 2

    postgres_server.stop()
    try:
        with pytest.raises(BrokerUnavailable) as refused:
            app.send_task(f"{TASKS}.add", args=(2, 2))
        assert refused.value.reason == "JOURNAL_UNAVAILABLE"
    finally:
        postgres_server.start()
    a.wait_for_line("journal writes succeed again")
    # B listens again and claims what A hands to the pool; A's waiter is woken by B's finish.
    assert app.send_task(f"{TASKS}.add", args=(3, 3)).get(timeout=30) == 6
