"""The PostgreSQL store: task rows in a PostgreSQL database (``serve --store postgresql://...``).

It keeps the contract of :mod:`broker.journal.store` with the same rows as the embedded
journal (schema: :mod:`broker.journal.postgres_schema`, docs/postgresql.md). A batch is one
transaction of at most three statements (upsert the new rows, update the changed ones, delete
the dropped ones), each taking the whole batch as arrays (``unnest``), sent in one pipeline: one
round trip to the database however many tasks the batch holds.

The fsync policies map onto PostgreSQL's ``synchronous_commit`` for this broker's connection:
``always`` is ``on`` (a commit is flushed to the server's WAL before it returns), ``everysec``
and ``no`` are ``off`` (the server's WAL writer flushes within 3 x ``wal_writer_delay``, 0.6 s by
default). Either way a kill -9 of the broker loses nothing acknowledged: the commit is in the
server. With ``off`` a crash of the database server itself may lose that last fraction of a
second, as ``everysec`` may on power loss with the embedded journal.

A lost connection (the server restarted, a failover) makes :meth:`write` raise; the journal then
refuses new work (UNAVAILABLE, ``JOURNAL_UNAVAILABLE``) and retries the same changes every
second on a new connection, so the broker recovers by itself once the server is back. A batch
whose COMMIT was lost in flight may have been applied: every statement is idempotent
(upserts, updates to a state, deletes), so writing it again is safe.

One broker owns the rows: it holds a session advisory lock for its lifetime (the PostgreSQL
counterpart of the data dir's lock), so a second broker on the same database refuses to start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from broker.core.model import Payload
from broker.journal.postgres_schema import current_version, migrate, version_problem
from broker.journal.rows import STATE_PERIODIC, Batch, StoredTask, new_row_columns
from broker.journal.store import StoreError
from broker.journal.store_url import redacted

logger = logging.getLogger(__name__)

_SYNCHRONOUS_COMMIT = {"always": "on", "everysec": "off", "no": "off"}
# Seconds to wait for the server when connecting: a broker must not hang at start or in a retry.
CONNECT_TIMEOUT = 5
# The advisory lock key of the broker owning the rows ("celo").
_OWNER_LOCK = 0x63656C6F
_LOAD_CHUNK = 10_000

# In every statement below, %(owner)s is this broker's id in shared mode and NULL with one broker
# (rows then have no owner), and %(fenced)s says whether rows another broker owns are left alone.
# A row written as queued in shared mode goes to the pool (no owner, a place in line) for any
# broker to claim (broker.cluster). A redelivered task goes ahead of every task waiting there,
# as at the front of a broker's own queue: the pool is ordered by place, and its places are
# negative (the latest redelivery first, as with front pushes on one broker).
_PLACE = "CASE WHEN front THEN -nextval('celeriac_pool_seq') ELSE nextval('celeriac_pool_seq') END"
_UPSERT = f"""
INSERT INTO celeriac_tasks
    (task_id, spec, key_until, args_type, args, result_type, result, state, owner, pool_seq)
SELECT task_id, spec, key_until, args_type, args, result_type, result, state,
    CASE WHEN pooled THEN NULL ELSE %(owner)s END,
    CASE WHEN pooled THEN {_PLACE} END
FROM unnest(
    %(task_id)s::text[], %(spec)s::text[], %(key_until)s::float8[], %(args_type)s::text[],
    %(args)s::bytea[], %(result_type)s::text[], %(result)s::bytea[], %(state)s::text[],
    %(pooled)s::bool[], %(front)s::bool[])
    AS u(task_id, spec, key_until, args_type, args, result_type, result, state, pooled, front)
ON CONFLICT (task_id) DO UPDATE SET
    spec = EXCLUDED.spec, key_until = EXCLUDED.key_until, args_type = EXCLUDED.args_type,
    args = EXCLUDED.args, result_type = EXCLUDED.result_type, result = EXCLUDED.result,
    state = EXCLUDED.state, owner = EXCLUDED.owner, pool_seq = EXCLUDED.pool_seq
WHERE NOT %(fenced)s OR celeriac_tasks.owner IS NULL OR celeriac_tasks.owner = %(owner)s
"""
_UPDATE = f"""
UPDATE celeriac_tasks AS t SET
    state = u.state, result_type = u.result_type, result = u.result,
    args_type = CASE WHEN u.drop_args THEN NULL ELSE t.args_type END,
    args = CASE WHEN u.drop_args THEN NULL ELSE t.args END,
    owner = CASE WHEN u.pooled THEN NULL ELSE %(owner)s END,
    pool_seq = CASE WHEN u.pooled THEN {_PLACE} END
FROM unnest(
    %(task_id)s::text[], %(state)s::text[], %(result_type)s::text[], %(result)s::bytea[],
    %(drop_args)s::bool[], %(pooled)s::bool[], %(front)s::bool[])
    AS u(task_id, state, result_type, result, drop_args, pooled, front)
WHERE t.task_id = u.task_id AND (NOT %(fenced)s OR t.owner = %(owner)s)
"""
_DELETE = "DELETE FROM celeriac_tasks WHERE task_id = ANY(%s::text[])"
_PUT_STATE = """
INSERT INTO celeriac_state (key, value) SELECT * FROM unnest(%s::text[], %s::text[])
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
"""
_DELETE_STATE = "DELETE FROM celeriac_state WHERE key = ANY(%s::text[])"
_SELECT = (
    "SELECT task_id, spec, key_until, args_type, args, result_type, result, state "
    "FROM celeriac_tasks"
)
# Wake-ups for the other brokers, delivered when the batch commits (broker.cluster listens).
FINISHED_CHANNEL = "celeriac_finished"
QUEUED_CHANNEL = "celeriac_queued"
# Periodic entries changed: "<broker id> <JSON array of names>" (broker.cluster keeps the other
# brokers' copies current).
PERIODIC_CHANNEL = "celeriac_periodic"
# Under PostgreSQL's 8000-byte payload limit.
_NOTIFY_BYTES = 7000
# Past this many queues in one batch the wake-up names none: every broker with credit looks.
_NOTIFY_QUEUES = 100
_NOTIFY_QUEUED = f"""
SELECT pg_notify('{QUEUED_CHANNEL}',
    CASE WHEN count(DISTINCT queue) > {_NOTIFY_QUEUES} THEN ''
    ELSE coalesce(string_agg(DISTINCT queue, ','), '') END)
FROM celeriac_tasks WHERE task_id = ANY(%s::text[])
"""
_QUEUED_PREFIX = '["queued"'
_FINISHED_PREFIX = '["finished"'

_INSERT_COLUMNS = (
    "task_id", "spec", "key_until", "args_type", "args", "result_type", "result", "state"
)  # fmt: skip
_UPDATE_COLUMNS = ("task_id", "state", "result_type", "result", "drop_args")

Connection = psycopg.Connection[tuple[Any, ...]]


class PostgresStore:
    """Task rows in PostgreSQL (see the module docstring).

    Args:
        url: The database, ``postgresql://user@host:port/database`` (libpq's forms and
            variables apply).
        fsync: "always", "everysec" or "no".
        migrate_on_start: Apply missing schema migrations when opening, instead of refusing.
        owner: This broker's id when several brokers share the database (broker.cluster);
            None when this broker owns every row.
    """

    def __init__(
        self, url: str, fsync: str, *, migrate_on_start: bool = False, owner: str | None = None
    ) -> None:
        self.url = url
        self.owner = owner
        self.shown = redacted(url)
        self._fsync = fsync
        self._migrate = migrate_on_start
        self._conn: Connection | None = None

    def open(self) -> None:
        """Connect, check (or apply) the schema and take the owner's lock."""
        try:
            conn = self._connect()
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to {self.shown}: {first_line(error)}") from None
        try:
            if self._migrate:
                for step in migrate(conn):
                    logger.info("schema migration %d applied: %s", step.version, step.description)
            problem = version_problem(current_version(conn))
            if problem is not None:
                raise StoreError(
                    f"database {self.shown} {problem}: run python -m broker migrate --store "
                    "URL (or serve with --migrate)"
                )
            self._lock_owner(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def load(self) -> Iterator[StoredTask]:
        """Every stored task, read through a server-side cursor (none when shared).

        A broker sharing the database starts empty: it takes tasks over from brokers that
        died and claims queued ones as its workers have room (broker.cluster).
        """
        if self.owner is not None:
            return
        conn = self._live()
        with conn.transaction(), conn.cursor(name="celeriac_load") as cursor:
            cursor.itersize = _LOAD_CHUNK
            cursor.execute(_SELECT)
            for row in cursor:
                yield stored_task(row)

    def load_state(self) -> Iterator[tuple[str, str]]:
        """Every stored (key, value) of broker state other than tasks."""
        rows = self._live().execute("SELECT key, value FROM celeriac_state").fetchall()
        for key, value in rows:
            yield str(key), str(value)

    def write(self, batch: Batch) -> None:
        """Apply ``batch`` in one transaction, one round trip."""
        shared = self.owner is not None
        common = {"owner": self.owner, "fenced": shared}
        inserts: dict[str, Any] = {name: [] for name in (*_INSERT_COLUMNS, "pooled", "front")}
        updates: dict[str, Any] = {name: [] for name in (*_UPDATE_COLUMNS, "pooled", "front")}
        pooled: list[str] = []
        finished: list[str] = []
        for row in batch.rows:
            result = row.result
            result_type = None if result is None else result.content_type
            result_body = None if result is None else result.body
            if row.spec is not None:
                target = inserts
                values: tuple[Any, ...] = new_row_columns(row, result_type, result_body)
                names: tuple[str, ...] = _INSERT_COLUMNS
            else:
                target = updates
                values = (row.task_id, row.state, result_type, result_body, row.drop_args)
                names = _UPDATE_COLUMNS
            for name, value in zip(names, values, strict=True):
                target[name].append(value)
            to_pool = shared and not row.held and row.state.startswith(_QUEUED_PREFIX)
            target["pooled"].append(to_pool)
            target["front"].append(row.front)
            if to_pool:
                pooled.append(row.task_id)
            elif shared and row.state.startswith(_FINISHED_PREFIX):
                finished.append(row.task_id)
        conn = self._live()
        try:
            with conn.pipeline(), conn.transaction(), conn.cursor() as cursor:
                if inserts["task_id"]:
                    cursor.execute(_UPSERT, inserts | common)
                if updates["task_id"]:
                    cursor.execute(_UPDATE, updates | common)
                if batch.deletes:
                    cursor.execute(_DELETE, (batch.deletes,))
                if batch.state:
                    _write_state(cursor, batch.state)
                _notify(cursor, pooled, finished)
                if shared and batch.state:
                    _notify_periodic(cursor, self.owner or "", batch.state)
        except psycopg.OperationalError:
            self._drop_connection()  # the next write connects again
            raise

    def sync(self) -> None:
        """Nothing to do: the server's WAL writer flushes commits (see the module docstring)."""

    def checkpoint(self) -> None:
        """Nothing to do: the server's autovacuum keeps the table in proportion to live rows."""

    def close(self) -> None:
        """Close the connection (which releases the owner's lock)."""
        self._drop_connection()

    # -- internals ---------------------------------------------------------------------------

    def _connect(self) -> Connection:
        conn: Connection = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="celeriac-broker",
        )
        conn.execute(
            "SELECT set_config('synchronous_commit', %s, false)",
            (_SYNCHRONOUS_COMMIT[self._fsync],),
        )
        return conn

    def _live(self) -> Connection:
        """The open connection, connecting again after a loss (taking the lock back)."""
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            try:
                self._lock_owner(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            logger.info("connected to %s again", self.shown)
        return self._conn

    def _lock_owner(self, conn: Connection) -> None:
        """One broker owning every row, or any number sharing them: never both at once."""
        if self.owner is None:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_OWNER_LOCK,)).fetchone()
            problem = "is in use by another broker (several brokers need --shared on each)"
        else:
            row = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (_OWNER_LOCK,)).fetchone()
            problem = "is in use by a broker that owns it alone (started without --shared)"
        if not row or not row[0]:
            raise StoreError(f"database {self.shown} {problem}")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                logger.debug("closing a broken connection failed", exc_info=True)


def migrate_store(url: str) -> int:
    """Bring the schema of ``url`` to this broker's version; returns the version (CLI migrate).

    Raises:
        StoreError: The server cannot be reached, or a migration failed.
    """
    shown = redacted(url)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            applied = migrate(conn)
            version = current_version(conn)
    except psycopg.Error as error:
        raise StoreError(f"cannot migrate {shown}: {first_line(error)}") from None
    for step in applied:
        logger.info("schema migration %d applied: %s", step.version, step.description)
    logger.info("database %s is at schema version %s", shown, version)
    return version or 0


def _write_state(cursor: psycopg.Cursor[Any], state: dict[str, str | None]) -> None:
    puts = [(key, value) for key, value in state.items() if value is not None]
    if puts:
        cursor.execute(_PUT_STATE, ([key for key, _ in puts], [value for _, value in puts]))
    deletes = [key for key, value in state.items() if value is None]
    if deletes:
        cursor.execute(_DELETE_STATE, (deletes,))


def _notify(cursor: psycopg.Cursor[Any], pooled: list[str], finished: list[str]) -> None:
    """Wake the other brokers at commit: queues that gained pooled tasks, finished task ids."""
    if pooled:
        cursor.execute(_NOTIFY_QUEUED, (pooled,))
    for payload in _payloads(finished):
        cursor.execute("SELECT pg_notify(%s, %s)", (FINISHED_CHANNEL, payload))


def _notify_periodic(cursor: psycopg.Cursor[Any], owner: str, state: dict[str, str | None]) -> None:
    names = [key[len(STATE_PERIODIC) :] for key in state if key.startswith(STATE_PERIODIC)]
    for payload in json_payloads(names):
        cursor.execute("SELECT pg_notify(%s, %s)", (PERIODIC_CHANNEL, f"{owner} {payload}"))


def json_payloads(names: list[str]) -> Iterator[str]:
    """``names`` as JSON arrays that each fit a notification (names may hold commas)."""
    for part in notify_parts(names, lambda name: len(json.dumps(name)) + 1):
        yield json.dumps(part)


def _payloads(task_ids: list[str]) -> Iterator[str]:
    """``task_ids`` comma-joined in payloads that fit a notification."""
    for part in notify_parts(task_ids, lambda task_id: len(task_id) + 1):
        yield ",".join(part)


def notify_parts(task_ids: list[str], cost: Callable[[str], int]) -> Iterator[list[str]]:
    """``task_ids`` in parts whose ``cost`` (each id's bytes in a payload) fits a notification."""
    part: list[str] = []
    size = 0
    for task_id in task_ids:
        length = cost(task_id)
        if part and size + length > _NOTIFY_BYTES:
            yield part
            part, size = [], 0
        part.append(task_id)
        size += length
    if part:
        yield part


def stored_task(row: tuple[Any, ...]) -> StoredTask:
    """A row read back, its columns in ``_SELECT``'s order."""
    task_id, spec, key_until, args_type, args, result_type, result, state = row
    return StoredTask(
        task_id,
        spec,
        key_until,
        None if args_type is None else Payload(args_type, bytes(args)),
        None if result_type is None else Payload(result_type, bytes(result)),
        state,
    )


def first_line(error: BaseException) -> str:
    """The first line of a driver error (libpq's messages run over several)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
