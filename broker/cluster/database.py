"""What a broker sharing PostgreSQL asks of the database, each an asyncio round trip.

Claims take queued tasks from the shared pool with ``FOR UPDATE SKIP LOCKED``, so brokers
claiming at once never wait for each other nor take the same row; one claim asks for every
queue its workers have room in (one statement per queue, one pipeline, one round trip).
The heartbeat and the take-over of dead brokers' tasks are one transaction, run by one broker at
a time (a transaction-level advisory lock; the others skip their turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar, cast

import psycopg

from broker.journal.postgres_store import (
    CONNECT_TIMEOUT,
    FINISHED_CHANNEL,
    PERIODIC_CHANNEL,
    QUEUED_CHANNEL,
    json_payloads,
    notify_parts,
    stored_task,
)
from broker.journal.rows import STATE_PERIODIC, StoredTask
from broker.journal.store_url import redacted

logger = logging.getLogger(__name__)

_COLUMNS = "t.task_id, t.spec, t.key_until, t.args_type, t.args, t.result_type, t.result, t.state"
_CLAIM = f"""
UPDATE celeriac_tasks AS t SET owner = %(me)s, pool_seq = NULL
FROM (
    SELECT task_id, pool_seq FROM celeriac_tasks
    WHERE pool_seq IS NOT NULL AND queue = %(queue)s
    ORDER BY priority DESC, pool_seq
    LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
) AS c
WHERE t.task_id = c.task_id
RETURNING c.pool_seq, {_COLUMNS}
"""
# Queued tasks of the pool, taken by id (to revoke them here) or by queue (to purge it).
_TAKE = f"""
UPDATE celeriac_tasks AS t SET owner = %s, pool_seq = NULL
WHERE t.task_id = ANY(%s::text[]) AND t.pool_seq IS NOT NULL
RETURNING {_COLUMNS}
"""
_TAKE_QUEUE = f"""
UPDATE celeriac_tasks AS t SET owner = %s, pool_seq = NULL
WHERE t.queue = %s AND t.pool_seq IS NOT NULL
RETURNING {_COLUMNS}
"""
# Finished tasks taken from whichever broker holds them (to forget them, or to requeue or
# purge dead letters here), by id or every dead letter (of a queue); the brokers that held
# them let go of them on DROP_CHANNEL. A dead letter's row has its flag at position 10 of
# the state array (broker.journal.rows).
_FINISHED = """t.state LIKE '["finished"%%'"""
_DEAD_LETTER = f"""{_FINISHED} AND (t.state::jsonb ->> 10)::boolean
    AND (%(queue)s = '' OR t.queue = %(queue)s)"""
_ADOPT_FINISHED = f"""
UPDATE celeriac_tasks AS t SET owner = %(me)s
WHERE t.task_id = ANY(%(ids)s::text[]) AND {_FINISHED}
RETURNING {_COLUMNS}
"""
_ADOPT_DEAD_LETTERS = f"""
UPDATE celeriac_tasks AS t SET owner = %(me)s WHERE {_DEAD_LETTER} RETURNING {_COLUMNS}
"""
# The running tasks of a worker that moved here from another broker, by the leases it names
# (worker id and lease id are items 5 and 6 of the state array).
_ADOPT_LEASES = f"""
UPDATE celeriac_tasks AS t SET owner = %(me)s
WHERE t.owner IS DISTINCT FROM %(me)s AND t.state LIKE '["leased"%%'
    AND (t.state::jsonb ->> 5) = %(worker)s AND (t.state::jsonb ->> 6) = ANY(%(leases)s::text[])
RETURNING {_COLUMNS}
"""
_DEAD_LETTERS = f"SELECT {_COLUMNS} FROM celeriac_tasks AS t WHERE {_DEAD_LETTER}"
DROP_CHANNEL = "celeriac_drop"
# Idempotency keys reserved for this broker's new tasks (see Cluster.reserve). A
# reservation is taken over once it lapsed, or when its task never got a row and the broker
# that reserved it is gone or reserved it more than _STALE_RESERVATION s ago (its submit was
# refused, or the task was forgotten since).
_RESERVE = """
INSERT INTO celeriac_keys AS k (key, task_id, broker_id, key_until)
SELECT key, task_id, %(me)s, key_until
FROM unnest(%(keys)s::text[], %(ids)s::text[], %(until)s::float8[]) AS u(key, task_id, key_until)
ON CONFLICT (key) DO UPDATE SET task_id = EXCLUDED.task_id, broker_id = EXCLUDED.broker_id,
    key_until = EXCLUDED.key_until, reserved_at = now()
WHERE k.key_until < extract(epoch FROM now())
    OR (NOT EXISTS (SELECT 1 FROM celeriac_tasks AS t WHERE t.task_id = k.task_id)
        AND (k.reserved_at < now() - make_interval(secs => %(stale)s)
            OR NOT EXISTS (SELECT 1 FROM celeriac_brokers AS b WHERE b.broker_id = k.broker_id)))
RETURNING k.key
"""
_RESERVED = f"""
SELECT k.key, k.task_id, {_COLUMNS}
FROM celeriac_keys AS k LEFT JOIN celeriac_tasks AS t ON t.task_id = k.task_id
WHERE k.key = ANY(%(keys)s::text[])
"""
_RELEASE = "DELETE FROM celeriac_keys WHERE key = ANY(%s::text[]) AND broker_id = %s"
_LAPSED_KEYS = "DELETE FROM celeriac_keys WHERE key_until < extract(epoch FROM now())"
_STALE_RESERVATION = 60.0
# The pool's depth by queue (an index-only scan of the pool's index).
_POOL_DEPTHS = (
    "SELECT queue, count(*) FROM celeriac_tasks WHERE pool_seq IS NOT NULL GROUP BY queue"
)
_FETCH = f"SELECT {_COLUMNS} FROM celeriac_tasks AS t WHERE t.task_id = ANY(%s::text[])"
_REGISTER = """
INSERT INTO celeriac_brokers (broker_id, address) VALUES (%s, %s)
ON CONFLICT (broker_id) DO UPDATE SET heartbeat_at = now()
"""
_HEARTBEAT = "UPDATE celeriac_brokers SET heartbeat_at = now() WHERE broker_id = %s"
# The key of the take-over lock ("celr").
_REAPER_LOCK = 0x63656C72
_DEAD = """
DELETE FROM celeriac_brokers
WHERE heartbeat_at < now() - make_interval(secs => %s) AND broker_id <> %s
RETURNING broker_id
"""
# Tasks of dead brokers, and tasks nobody owns outside the pool (a broker stopped cleanly and
# gave them up, or a single-broker database turned shared).
_ADOPT = f"""
UPDATE celeriac_tasks AS t SET owner = %s
WHERE t.owner = ANY(%s::text[]) OR (t.owner IS NULL AND t.pool_seq IS NULL)
RETURNING {_COLUMNS}
"""
_DISOWN = "UPDATE celeriac_tasks SET owner = NULL WHERE owner = %s"
# Revokes sent to whichever broker holds the tasks.
REVOKE_CHANNEL = "celeriac_revoke"
_LEAVE = "DELETE FROM celeriac_brokers WHERE broker_id = %s"
# The key of the session advisory lock the leader holds, the broker running periodic ticks
# ("celp"). PostgreSQL releases it when the leader's session ends, a kill -9 included.
_LEADER_LOCK = 0x63656C70
# Rate limit tokens: the row ``rate/<task name>`` holds the epoch second at which the next
# token of that task starts; a reservation of ``span`` seconds of tokens moves it on (from now
# at the earliest) and returns how long until its first token.
_RATE_PREFIX = "rate/"
_EPOCH = "extract(epoch FROM clock_timestamp())::float8"
_RESERVE_TOKENS = f"""
INSERT INTO celeriac_state AS s (key, value) VALUES (%(key)s, ({_EPOCH} + %(span)s)::text)
ON CONFLICT (key) DO UPDATE SET value = (greatest(s.value::float8, {_EPOCH}) + %(span)s)::text
RETURNING s.value::float8 - %(span)s - {_EPOCH}
"""
# Concurrency slots (celeriac_slots): a task takes one of its key's slots while fewer than the
# limit are held by other tasks (its own row again is a slot it already holds). The key's
# transaction advisory lock makes the count and the insert one step across brokers.
_SLOT_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
_SLOT_LOCK_CLASS = 0x63656C73  # "cels"
_TAKE_SLOT = """
INSERT INTO celeriac_slots (key, task_id, broker_id)
SELECT %(key)s, %(task_id)s, %(me)s
WHERE (SELECT count(*) FROM celeriac_slots WHERE key = %(key)s AND task_id <> %(task_id)s)
    < %(limit)s
ON CONFLICT (key, task_id) DO UPDATE SET broker_id = EXCLUDED.broker_id
RETURNING 1
"""
_FREE_SLOTS = """
DELETE FROM celeriac_slots
WHERE (key, task_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
"""
# Slots freed, "<JSON array of keys>": brokers with tasks waiting for one ask again.
SLOTS_CHANNEL = "celeriac_slots"
# Slots whose task no broker runs or holds any more (its broker died between taking the slot
# and giving it back); a minute's grace covers a task whose row is still on its way.
_LOST_SLOTS = """
DELETE FROM celeriac_slots AS s
WHERE s.taken_at < now() - interval '1 minute' AND NOT EXISTS (
    SELECT 1 FROM celeriac_tasks AS t
    WHERE t.task_id = s.task_id AND t.owner IS NOT NULL AND t.state NOT LIKE '["finished"%%'
)
"""
_PERIODIC_ROWS = "SELECT key, value FROM celeriac_state WHERE key LIKE %s"
_PERIODIC_ROWS_NAMED = "SELECT key, value FROM celeriac_state WHERE key = ANY(%s::text[])"

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
Method = TypeVar("Method", bound=Callable[..., Awaitable[Any]])
# A session idle inside a transaction this long is ended by the server, so a broker stalled
# mid-transaction cannot hold the take-over lock (or claimed rows) for long.
_IDLE_IN_TRANSACTION_MS = 10_000


def _one_at_a_time(method: Method) -> Method:
    """Run ``method`` alone on the connection, closing the connection when it fails.

    The heartbeat, claims and reads are concurrent tasks, and two transactions must never
    interleave on one connection.
    """

    @functools.wraps(method)
    async def serialized(self: ClusterDatabase, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            try:
                return await method(self, *args, **kwargs)
            except psycopg.Error:
                await self._drop()
                raise

    return cast(Method, serialized)


class ClusterDatabase:
    """The broker's second connection, for claims, reads and heartbeats (asyncio).

    Args:
        url: The database.
        broker_id: This broker's id (its rows' owner).
    """

    def __init__(self, url: str, broker_id: str) -> None:
        self.url = url
        self.shown = redacted(url)
        self.broker_id = broker_id
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        # Whether this connection's session holds the leader's lock; ``on_lost_lead`` runs
        # when it is dropped while holding it (the lock goes with the session).
        self.leading = False
        self.on_lost_lead: Callable[[], None] | None = None

    @_one_at_a_time
    async def register(self, address: str) -> None:
        """Announce this broker (its heartbeat starts now)."""
        conn = await self._live()
        await conn.execute(_REGISTER, (self.broker_id, address))

    @_one_at_a_time
    async def heartbeat_and_take_over(
        self, address: str, timeout: float
    ) -> tuple[bool, list[str], list[StoredTask]]:
        """Beat, then take over the tasks of brokers silent for ``timeout`` s.

        Returns:
            Whether this broker was still registered (False: it had been presumed dead and is
            registered again), the dead brokers' ids, and the rows taken over.
        """
        conn = await self._live()
        async with conn.transaction():
            beat = await conn.execute(_HEARTBEAT, (self.broker_id,))
            alive = beat.rowcount == 1
            if not alive:
                await conn.execute(_REGISTER, (self.broker_id, address))
            locked = await (
                await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_REAPER_LOCK,))
            ).fetchone()
            if not locked or not locked[0]:
                return alive, [], []
            dead = [
                row[0]
                for row in await (await conn.execute(_DEAD, (timeout, self.broker_id))).fetchall()
            ]
            rows = await (await conn.execute(_ADOPT, (self.broker_id, dead))).fetchall()
            await conn.execute(_LOST_SLOTS)
            await conn.execute(_LAPSED_KEYS)
        return alive, dead, [stored_task(row) for row in rows]

    @_one_at_a_time
    async def claim(self, wanted: Mapping[str, int]) -> dict[str, list[StoredTask]]:
        """Take up to ``wanted[queue]`` tasks of each queue from the pool, oldest first."""
        conn = await self._live()
        claimed: dict[str, list[StoredTask]] = {}
        async with conn.transaction():
            cursors = []
            async with conn.pipeline():
                for queue, count in wanted.items():
                    cursor = conn.cursor()
                    await cursor.execute(
                        _CLAIM, {"me": self.broker_id, "queue": queue, "count": count}
                    )
                    cursors.append((queue, cursor))
            for queue, cursor in cursors:
                rows = sorted(await cursor.fetchall(), key=lambda row: row[0])
                claimed[queue] = [stored_task(row[1:]) for row in rows]
        return claimed

    @_one_at_a_time
    async def lead(self) -> bool:
        """Hold the leader's lock if no other broker does; True while this broker holds it."""
        if not self.leading:
            conn = await self._live()
            row = await (
                await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LEADER_LOCK,))
            ).fetchone()
            self.leading = bool(row and row[0])
        return self.leading

    @_one_at_a_time
    async def reserve_tokens(self, name: str, span: float) -> float:
        """Reserve ``span`` seconds of task ``name``'s rate tokens; seconds until they start."""
        conn = await self._live()
        cursor = await conn.execute(_RESERVE_TOKENS, {"key": _RATE_PREFIX + name, "span": span})
        row = await cursor.fetchone()
        return max(0.0, float(row[0])) if row else 0.0

    @_one_at_a_time
    async def take_slot(self, key: str, task_id: str, limit: int) -> bool:
        """Take one of ``key``'s ``limit`` slots for ``task_id``; False when all are held."""
        conn = await self._live()
        async with conn.transaction():
            await conn.execute(_SLOT_LOCK, (_SLOT_LOCK_CLASS, key))
            params = {"key": key, "task_id": task_id, "me": self.broker_id, "limit": limit}
            taken = await (await conn.execute(_TAKE_SLOT, params)).fetchone()
        return taken is not None

    @_one_at_a_time
    async def free_slots(self, slots: Collection[tuple[str, str]]) -> None:
        """Give the slots (key, task id) back, and wake the brokers waiting for their keys."""
        conn = await self._live()
        keys = sorted({key for key, _ in slots})
        async with conn.transaction():
            await conn.execute(
                _FREE_SLOTS, ([key for key, _ in slots], [task_id for _, task_id in slots])
            )
            for payload in json_payloads(keys):
                await conn.execute("SELECT pg_notify(%s, %s)", (SLOTS_CHANNEL, payload))

    @_one_at_a_time
    async def periodic_entries(self, names: Collection[str] | None = None) -> dict[str, str]:
        """The stored periodic entries (name -> state row), all of them or those ``names``."""
        conn = await self._live()
        if names is None:
            cursor = await conn.execute(_PERIODIC_ROWS, (STATE_PERIODIC + "%",))
        else:
            keys = [STATE_PERIODIC + name for name in names]
            cursor = await conn.execute(_PERIODIC_ROWS_NAMED, (keys,))
        return {
            str(key)[len(STATE_PERIODIC) :]: str(value) for key, value in await cursor.fetchall()
        }

    @_one_at_a_time
    async def pool_depths(self) -> dict[str, int]:
        """How many tasks wait in the shared pool, by queue."""
        conn = await self._live()
        rows = await (await conn.execute(_POOL_DEPTHS)).fetchall()
        return {str(queue): int(count) for queue, count in rows}

    @_one_at_a_time
    async def reserve(
        self, wanted: Mapping[str, tuple[str, float]]
    ) -> tuple[set[str], dict[str, tuple[str, StoredTask | None]]]:
        """Reserve keys (``k:`` and an idempotency key) for new tasks.

        Args:
            wanted: key -> (the new task's id, epoch seconds the reservation lasts).

        Returns:
            The keys reserved for this broker now, and for every key the task it names with
            that task's row (None while it has none).
        """
        conn = await self._live()
        keys = list(wanted)
        params = {
            "me": self.broker_id,
            "keys": keys,
            "ids": [wanted[key][0] for key in keys],
            "until": [wanted[key][1] for key in keys],
            "stale": _STALE_RESERVATION,
        }
        async with conn.transaction():
            won = {row[0] for row in await (await conn.execute(_RESERVE, params)).fetchall()}
            held = await (await conn.execute(_RESERVED, params)).fetchall()
        return won, {
            str(row[0]): (str(row[1]), None if row[3] is None else stored_task(row[2:]))
            for row in held
        }

    @_one_at_a_time
    async def release(self, keys: list[str]) -> None:
        """Give up keys reserved for tasks that were refused after all."""
        conn = await self._live()
        await conn.execute(_RELEASE, (keys, self.broker_id))

    @_one_at_a_time
    async def take(self, task_ids: Collection[str]) -> list[StoredTask]:
        """Take the pooled tasks among ``task_ids`` out of the pool, as this broker's."""
        conn = await self._live()
        rows = await (await conn.execute(_TAKE, (self.broker_id, list(task_ids)))).fetchall()
        return [stored_task(row) for row in rows]

    @_one_at_a_time
    async def take_queue(self, queue: str) -> list[StoredTask]:
        """Take every task of ``queue`` out of the pool, as this broker's."""
        conn = await self._live()
        rows = await (await conn.execute(_TAKE_QUEUE, (self.broker_id, queue))).fetchall()
        return [stored_task(row) for row in rows]

    @_one_at_a_time
    async def adopt_finished(
        self, task_ids: Collection[str] | None, queue: str = ""
    ) -> list[StoredTask]:
        """Take finished tasks over from the brokers holding them, telling those to let go.

        Args:
            task_ids: The tasks; None for every dead letter (of ``queue``, or of all queues).
            queue: With ``task_ids`` None, the dead letters' queue ("" for every queue).
        """
        conn = await self._live()
        params = {"me": self.broker_id, "ids": list(task_ids or ()), "queue": queue}
        statement = _ADOPT_DEAD_LETTERS if task_ids is None else _ADOPT_FINISHED
        async with conn.transaction():
            rows = await (await conn.execute(statement, params)).fetchall()
            taken = [stored_task(row) for row in rows]
            await self._tell_to_drop(conn, [row.task_id for row in taken])
        return taken

    @_one_at_a_time
    async def adopt_leases(self, worker_id: str, lease_ids: list[str]) -> list[StoredTask]:
        """Take over the tasks ``worker_id`` runs under ``lease_ids``, wherever they are held."""
        conn = await self._live()
        params = {"me": self.broker_id, "worker": worker_id, "leases": lease_ids}
        async with conn.transaction():
            rows = await (await conn.execute(_ADOPT_LEASES, params)).fetchall()
            taken = [stored_task(row) for row in rows]
            await self._tell_to_drop(conn, [row.task_id for row in taken])
        return taken

    async def _tell_to_drop(self, conn: Connection, task_ids: list[str]) -> None:
        """Tell the brokers holding ``task_ids`` to let go of them, at commit."""
        for payload in _drop_payloads(self.broker_id, task_ids):
            await conn.execute("SELECT pg_notify(%s, %s)", (DROP_CHANNEL, payload))

    @_one_at_a_time
    async def dead_letters(self, queue: str) -> list[StoredTask]:
        """Every broker's dead letters (of ``queue``, or of all queues when "")."""
        conn = await self._live()
        rows = await (await conn.execute(_DEAD_LETTERS, {"queue": queue})).fetchall()
        return [stored_task(row) for row in rows]

    @_one_at_a_time
    async def ask_to_revoke(self, task_ids: list[str], terminate: bool, reason: str) -> None:
        """Ask the brokers holding ``task_ids`` to revoke them (a NOTIFY every broker reads)."""
        conn = await self._live()
        payload = json.dumps({"ids": task_ids, "terminate": terminate, "reason": reason[:200]})
        await conn.execute("SELECT pg_notify(%s, %s)", (REVOKE_CHANNEL, payload))

    @_one_at_a_time
    async def fetch(self, task_ids: Collection[str]) -> list[StoredTask]:
        """The rows of ``task_ids`` that exist."""
        conn = await self._live()
        rows = await (await conn.execute(_FETCH, (list(task_ids),))).fetchall()
        return [stored_task(row) for row in rows]

    @_one_at_a_time
    async def leave(self) -> None:
        """Give up every task this broker owns (others adopt them) and deregister."""
        conn = await self._live()
        async with conn.transaction():
            await conn.execute(_DISOWN, (self.broker_id,))
            await conn.execute(_LEAVE, (self.broker_id,))

    async def close(self) -> None:
        """Close the connection."""
        await self._drop()

    async def _drop(self) -> None:
        """Close the connection (after a failure, ending any transaction it had open)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        self._lose_lead()

    def _lose_lead(self) -> None:
        if self.leading:
            self.leading = False
            if self.on_lost_lead is not None:
                self.on_lost_lead()

    async def notifications(self) -> AsyncIterator[tuple[str, str]]:
        """(channel, payload) of every wake-up, on a listening connection of its own.

        Raises:
            psycopg.Error: The connection was lost (the caller listens again).
        """
        conn = await _connect(self.url)
        try:
            await conn.execute(f"LISTEN {FINISHED_CHANNEL}".encode())
            await conn.execute(f"LISTEN {QUEUED_CHANNEL}".encode())
            await conn.execute(f"LISTEN {REVOKE_CHANNEL}".encode())
            await conn.execute(f"LISTEN {PERIODIC_CHANNEL}".encode())
            await conn.execute(f"LISTEN {SLOTS_CHANNEL}".encode())
            await conn.execute(f"LISTEN {DROP_CHANNEL}".encode())
            yield "", ""  # listening: anything sent before this was missed
            async for note in conn.notifies():
                yield note.channel, note.payload
        finally:
            await conn.close()

    async def _live(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._lose_lead()  # a new session holds no lock
            self._conn = await _connect(self.url)
        return self._conn


def _drop_payloads(broker_id: str, task_ids: list[str]) -> Iterator[str]:
    """``{"from": broker_id, "ids": [...]}`` in payloads that fit a notification."""
    for part in notify_parts(task_ids, lambda task_id: len(json.dumps(task_id)) + 1):
        yield json.dumps({"from": broker_id, "ids": part})


async def _connect(url: str) -> Connection:
    conn: Connection = await psycopg.AsyncConnection.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        application_name="celeriac-broker",
        options=f"-c idle_in_transaction_session_timeout={_IDLE_IN_TRANSACTION_MS}",
    )
    return conn
