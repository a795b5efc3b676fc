"""The PostgreSQL schema, its version table and its migrations.

Tables (all prefixed ``celeriac_`` so they can share a database with an application's own):

``celeriac_schema_version``
    One row per migration applied: ``version`` (integer, the key), ``description``,
    ``applied_at``. The schema's version is the highest one. A broker refuses to start on a
    database whose version differs from the one it was built for, naming the command that fixes
    it (``python -m broker migrate --store URL``, or ``serve --migrate`` to apply it at start).

``celeriac_tasks``
    One row per live task, the same row as the embedded journal's (broker.journal.rows):
    ``task_id`` (text, the key), ``spec`` and ``state`` (the JSON arrays of rows.py, as text),
    ``key_until`` (when the idempotency key stops deduplicating, epoch seconds, or NULL),
    ``args_type``/``args`` and ``result_type``/``result`` (content type and bytes, NULL when
    absent). A finished task's arguments are cleared; rows go when results expire or are
    forgotten. Since version 3, for brokers sharing the database (``--shared``): ``owner``
    (the broker holding the task; NULL with a single broker, and for a task in the shared
    pool), ``pool_seq`` (a pooled task's place in line), and ``queue``/``priority``
    (generated from ``spec``: a format 1 array has 14 items, the task id second; later ones
    13, 15 or 17, the queue second) for the pool's index.

``celeriac_brokers`` (version 3)
    The brokers sharing the database: ``broker_id`` (the key), ``address``, ``started_at``,
    ``heartbeat_at``. A broker silent for ``--broker-timeout`` is deleted by another, which
    adopts its tasks.

``celeriac_keys`` (version 4)
    Idempotency keys reserved by brokers sharing the database (``--shared``), so that a repeat
    submitted to another broker is recognised: ``key`` (``k:`` and the idempotency key; the
    key), ``task_id`` (the task it names), ``broker_id`` (the broker that reserved it),
    ``key_until`` (epoch seconds the key's window closes), ``reserved_at``.

``celeriac_slots`` (version 5)
    Concurrency limits across brokers: one row per task holding a slot of its concurrency key,
    ``key`` and ``task_id`` (together the key), ``broker_id`` (the broker that took it) and
    ``taken_at``. A key's rows are counted, under a transaction advisory lock on the key, to
    take a slot; a lease's end deletes its row (broker.cluster.database).

``celeriac_state``
    Broker state other than tasks (broker.journal.rows.Batch.state): ``key`` (text, the key,
    e.g. ``periodic/<name>``) and ``value`` (its JSON, as text). Periodic tasks live here, and
    with several brokers ``rate/<task name>``: when the next rate-limit token of that task
    starts (epoch seconds; broker.cluster.database).

Migrations only ever add: a migration is one transaction, applied under an advisory lock so
that brokers started together with ``--migrate`` apply each step once.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from broker.journal.rows import FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema."""

    version: int
    description: str
    sql: str


MIGRATIONS = (
    Migration(
        1,
        f"task rows (row format {FORMAT_VERSION})",
        """
        CREATE TABLE celeriac_tasks (
            task_id text PRIMARY KEY,
            spec text NOT NULL,
            key_until double precision,
            args_type text,
            args bytea,
            result_type text,
            result bytea,
            state text NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "broker state other than tasks (periodic tasks)",
        """
        CREATE TABLE celeriac_state (
            key text PRIMARY KEY,
            value text NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "several brokers: task owners, the shared pool of queued tasks, broker heartbeats",
        """
        ALTER TABLE celeriac_tasks
            ADD COLUMN owner text,
            ADD COLUMN pool_seq bigint,
            ADD COLUMN queue text GENERATED ALWAYS AS ((spec::jsonb) ->>
                CASE WHEN jsonb_array_length(spec::jsonb) = 14 THEN 2 ELSE 1 END) STORED,
            ADD COLUMN priority integer GENERATED ALWAYS AS (((spec::jsonb) ->>
                CASE WHEN jsonb_array_length(spec::jsonb) = 14 THEN 4 ELSE 3 END)::integer) STORED;
        CREATE SEQUENCE celeriac_pool_seq;
        CREATE INDEX celeriac_tasks_pool ON celeriac_tasks (queue, priority DESC, pool_seq)
            WHERE pool_seq IS NOT NULL;
        CREATE INDEX celeriac_tasks_owner ON celeriac_tasks (owner) WHERE owner IS NOT NULL;
        CREATE INDEX celeriac_tasks_unowned ON celeriac_tasks (task_id)
            WHERE owner IS NULL AND pool_seq IS NULL;
        CREATE TABLE celeriac_brokers (
            broker_id text PRIMARY KEY,
            address text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    Migration(
        4,
        "several brokers: idempotency keys reserved across brokers",
        """
        CREATE TABLE celeriac_keys (
            key text PRIMARY KEY,
            task_id text NOT NULL,
            broker_id text NOT NULL,
            key_until double precision NOT NULL,
            reserved_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX celeriac_keys_until ON celeriac_keys (key_until);
        """,
    ),
    Migration(
        5,
        "several brokers: concurrency limit slots held across brokers",
        """
        CREATE TABLE celeriac_slots (
            key text NOT NULL,
            task_id text NOT NULL,
            broker_id text NOT NULL,
            taken_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (key, task_id)
        );
        """,
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

# An arbitrary constant: the advisory lock key of schema changes.
_MIGRATION_LOCK = 0x63656C6D  # "celm"

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS celeriac_schema_version (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def current_version(conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """The schema version of the database, or None when it has no Celeriac schema."""
    exists = conn.execute("SELECT to_regclass('celeriac_schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT max(version) FROM celeriac_schema_version").fetchone()
    return None if row is None or row[0] is None else int(str(row[0]))


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> list[Migration]:
    """Apply every migration the database lacks; returns those applied (oldest first).

    Raises:
        psycopg.Error: A step failed; that step is rolled back, earlier ones stay.
    """
    applied = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(VERSION_TABLE)
        version = current_version(conn) or 0
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            with conn.transaction():
                conn.execute(step.sql.encode())
                conn.execute(
                    "INSERT INTO celeriac_schema_version (version, description) VALUES (%s, %s)",
                    (step.version, step.description),
                )
            applied.append(step)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def version_problem(version: int | None) -> str | None:
    """Why a broker cannot use a database at schema ``version``, or None when it can."""
    if version == SCHEMA_VERSION:
        return None
    if version is None:
        return "has no Celeriac schema yet"
    if version < SCHEMA_VERSION:
        return f"has schema version {version}; this broker needs version {SCHEMA_VERSION}"
    return (
        f"has schema version {version}, newer than this broker's {SCHEMA_VERSION} "
        "(refusing to start rather than misread it)"
    )
