"""The PostgreSQL store through real processes and a real PostgreSQL server.

A broker serving ``--store postgresql://...`` keeps everything it acknowledged across kill -9,
refuses new work while the database is down (UNAVAILABLE, JOURNAL_UNAVAILABLE) and recovers by
itself when it is back; the schema is created and versioned by ``python -m broker migrate``.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from broker.core.model import TaskRecord, TaskSpec
from broker.journal.postgres_schema import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE
from broker.journal.postgres_store import PostgresStore
from broker.journal.rows import Batch, encode
from client import Celeriac
from client.errors import BrokerUnavailable
from client.result import AsyncResult
from tests.e2e.conftest import Started
from tests.e2e.test_durability import (
    acknowledge_one_of_everything,
    assert_everything_back,
)
from tests.postgres import PostgresServer
from tests.support import BrokerProcess, WorkerProcess, run_python

TASKS = "tests.e2e.tasks"


def _migrated(url: str) -> str:
    done = run_python("-m", "broker", "migrate", "--store", url)
    assert done.returncode == 0, done.stderr
    return url


def _serving(url: str, cleanup: list[Started], *extra: str) -> tuple[BrokerProcess, Celeriac]:
    broker = BrokerProcess("--store", url, "--lease-grace", "0.5", *extra)
    app = Celeriac("pg", broker=broker.address, connect_timeout=2)
    cleanup += [broker, app]
    return broker, app


def _state(app: Celeriac, task_id: str) -> str:
    return AsyncResult(task_id, app=app).state


def test_the_schema_is_versioned_and_applied_by_migrate_never_silently(
    postgres_url: str, cleanup: list[Started]
) -> None:
    with_password = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust: ignored
    refused = run_python("-m", "broker", "serve", "--port", "0", "--store", with_password)
    assert refused.returncode == 2
    assert "has no Celeriac schema yet: run python -m broker migrate" in refused.stderr
    assert "s3cret-pw" not in refused.stderr + refused.stdout
    assert "postgres:***@" in refused.stderr

    migrated = run_python("-m", "broker", "migrate", "--store", with_password)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema migration 1 applied" in migrated.stderr
    assert "schema migration 2 applied" in migrated.stderr
    assert "s3cret-pw" not in migrated.stderr + migrated.stdout
    again = run_python("-m", "broker", "migrate", "--store", with_password)
    assert "schema migration" not in again.stderr
    assert f"at schema version {SCHEMA_VERSION}" in again.stderr
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute("SELECT version FROM celeriac_schema_version").fetchall()
    assert sorted(versions) == [(step.version,) for step in MIGRATIONS]

    broker, app = _serving(with_password, cleanup)
    assert app.send_task(f"{TASKS}.add", args=(1, 2)).id
    assert "s3cret-pw" not in broker.output
    second = run_python("-m", "broker", "serve", "--port", "0", "--store", postgres_url)
    assert second.returncode == 2
    assert "is in use by another broker" in second.stderr


def test_migrate_upgrades_a_database_an_older_broker_wrote(
    postgres_url: str, cleanup: list[Started]
) -> None:
    row = encode(TaskRecord("old-task", TaskSpec(name=f"{TASKS}.add")), lambda spec: 0.0)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as version 1 left it
        conn.execute(VERSION_TABLE.encode())
        conn.execute(MIGRATIONS[0].sql.encode())
        conn.execute("INSERT INTO celeriac_schema_version VALUES (1, 'task rows')")
        conn.execute(
            "INSERT INTO celeriac_tasks (task_id, spec, state) VALUES (%s, %s, %s)",
            (row.task_id, row.spec, row.state),
        )
    refused = run_python("-m", "broker", "serve", "--port", "0", "--store", postgres_url)
    assert f"has schema version 1; this broker needs version {SCHEMA_VERSION}" in refused.stderr
    migrated = run_python("-m", "broker", "migrate", "--store", postgres_url)
    assert "schema migration 1 applied" not in migrated.stderr
    assert "schema migration 2 applied" in migrated.stderr, migrated.stderr
    broker, app = _serving(postgres_url, cleanup)
    broker.wait_for_line("recovered 1 tasks .* 1 queued")
    assert _state(app, "old-task") == "PENDING"


def test_migrate_on_start_is_opt_in(postgres_url: str, cleanup: list[Started]) -> None:
    broker, app = _serving(postgres_url, cleanup, "--migrate")
    broker.wait_for_line("schema migration 1 applied")
    assert app.send_task(f"{TASKS}.add", args=(1, 2)).state == "PENDING"


def test_kill_9_then_restart_brings_back_everything_acknowledged(
    postgres_url: str, tmp_path: Path, cleanup: list[Started]
) -> None:
    url = _migrated(postgres_url)
    runs = tmp_path / "runs.txt"
    first, app = _serving(url, cleanup)
    side = WorkerProcess(first.address, TASKS, "--queues", "side", "--pool", "solo")
    cleanup.append(side)
    acked = acknowledge_one_of_everything(app, side, runs)

    side.stop_hard()
    first.stop_hard()
    second, again = _serving(url, cleanup)
    assert_everything_back(acked, again, second, runs, cleanup)


def test_a_database_restart_refuses_new_work_then_recovers_by_itself(
    postgres_server: PostgresServer, postgres_url: str, cleanup: list[Started]
) -> None:
    broker, app = _serving(_migrated(postgres_url), cleanup)
    worker = WorkerProcess(broker.address, TASKS, "--pool", "solo")
    cleanup.append(worker)
    before = app.send_task(f"{TASKS}.add", args=(1, 1))
    assert before.get(timeout=20) == 2

    postgres_server.stop()
    try:
        with pytest.raises(BrokerUnavailable) as refused:
            app.send_task(f"{TASKS}.add", args=(2, 2))
        assert refused.value.reason == "JOURNAL_UNAVAILABLE"
        broker.wait_for_line("journal write failed, refusing new work")
    finally:
        postgres_server.start()

    broker.wait_for_line("journal writes succeed again: accepting new work")
    after = app.send_task(f"{TASKS}.add", args=(3, 3))
    assert after.get(timeout=20) == 6
    assert AsyncResult(before.id, app=app).get(timeout=5) == 2


def test_broker_state_rows_are_put_replaced_and_deleted_with_a_batch(postgres_url: str) -> None:
    store = PostgresStore(_migrated(postgres_url), "everysec")
    store.open()
    try:
        store.write(Batch(state={"periodic/a": '{"v":1}', "periodic/b": '{"v":2}'}))
        store.write(Batch(state={"periodic/a": '{"v":3}', "periodic/b": None}))
        assert list(store.load_state()) == [("periodic/a", '{"v":3}')]
    finally:
        store.close()
