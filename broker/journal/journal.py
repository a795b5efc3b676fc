"""The journal: the core's changes, batched once per event-loop turn, written on one thread.

The core notes every persisted transition in ``Lifecycle.changes`` (task id -> record, or None
once dropped). At the end of each loop turn the runtime calls :meth:`Journal.kick`: when no
write is in flight, the changes are encoded into one batch (one row per task, however many
times it changed) and handed to the writer thread. While that batch is being written the next
accumulates, so a busy broker commits large batches (group commit) and an idle one commits each
change at once.

A small batch found with the writer thread idle is written on the loop's thread instead, when
the store allows it (``inline_rows``: SQLite unless ``--fsync always``): a commit of a few rows
that only reaches the OS costs the loop less than handing the batch to the thread and being
woken when it is done, and a lone call's answer no longer waits for two thread wake-ups. It runs
as a loop callback after whatever the same flush queued to the streams (a new task's assignment
goes to its worker first), or at once when a handler is waiting for it. Store calls never
overlap: an inline write happens only when no call is with the writer thread, and anything that
can block on the disk (an fsync, a checkpoint, a large batch) stays on that thread.

Acknowledged means recorded: a handler that answers for a change awaits :meth:`durable`,
which returns once the batch holding every change made so far is written (per the fsync
policy). Worker outcome acks use :meth:`when_durable`.

A failed write (disk full, EIO) makes the broker refuse new work with JournalUnavailable
(UNAVAILABLE) while the writer retries the same changes every second; answers that were
waiting for the failed batch get the same error. The first successful write lifts the refusal,
so the broker recovers by itself once space is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.core.broker import Broker
from broker.core.model import Phase, TaskRecord
from broker.core.periodic import PeriodicEntry
from broker.errors import BrokerError, JournalUnavailable
from broker.journal.rows import (
    STATE_PERIODIC,
    STATE_RATE,
    Batch,
    Decoder,
    decode_periodic,
    decode_rate,
    encode,
    encode_periodic,
    encode_rate,
)
from broker.journal.store import Store

logger = logging.getLogger(__name__)

# Seconds between retries of a failed write, and between fsyncs under "everysec" (and
# checkpoints, while there are writes).
RETRY_INTERVAL = 1.0
SYNC_INTERVAL = 1.0
# Rows written after which a checkpoint is due before the next second comes (bounds the WAL
# under heavy load).
CHECKPOINT_ROWS = 50_000

WHAT_A_CRASH_LOSES = {
    "always": "a crash or a power loss loses nothing acknowledged",
    "everysec": (
        "a crash (kill -9) loses nothing acknowledged; a power loss up to the last second"
    ),
    "no": (
        "a crash (kill -9) loses nothing acknowledged; a power loss what the OS had not yet "
        "written (typically up to 30 s)"
    ),
}


@dataclass(slots=True)
class _Group:
    """Everyone waiting for one batch."""

    futures: list[asyncio.Future[BrokerError | None]] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a start found in the store."""

    queued: int
    scheduled: int
    leased: int
    finished: int
    seconds: float
    # Tasks of workflows held for the tasks they depend on.
    waiting: int = 0

    @property
    def total(self) -> int:
        """Every task restored."""
        return self.queued + self.scheduled + self.leased + self.finished + self.waiting


class Journal:
    """Feeds one broker's changes to a store (see the module docstring).

    Args:
        store: Where rows go; opened by the caller.
        broker: The core whose changes are written.
        fsync: The policy; "everysec" gets a sync once a second after writes.
        loop: The broker's event loop.
    """

    def __init__(
        self, store: Store, broker: Broker, fsync: str, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._store = store
        self._broker = broker
        self._lifecycle = broker.lifecycle
        self._fsync = fsync
        self._loop = loop
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="celeriac-journal"
        )
        self._writing: _Group | None = None
        self._next: _Group | None = None
        self._failed: JournalUnavailable | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._tick: asyncio.TimerHandle | None = None
        # Batches of at most this many rows may be written on the loop (see the docstring).
        self._inline_rows: int = getattr(store, "inline_rows", 0)
        self._inline: asyncio.Handle | None = None  # an inline write scheduled, not yet run
        self._inline_batch: tuple[dict[str, TaskRecord | None], Batch] | None = None
        self._with_thread = 0  # store calls handed to the writer thread and not back yet
        self._last_row = 0  # the highest row key given to a task
        self._unsynced = False
        self._rows_unchecked = 0  # rows written since the last checkpoint
        self._closed = False
        # The periodic changes of the batch being written (put back if its write fails).
        self._periodic_writing: dict[str, PeriodicEntry | None] = {}
        self._rates_writing: dict[str, float | None] = {}

    def recover(self) -> Recovered:
        """Load every row into the core, then start noting changes. Call once, before serving."""
        started = time.monotonic()
        records: list[TaskRecord] = []
        keys: list[tuple[str, str, float]] = []
        decode = Decoder().decode
        last_row = 0
        for stored in self._store.load():
            record = decode(stored)
            records.append(record)
            last_row = max(last_row, stored.row)
            if stored.key_until is not None and record.spec.idempotency_key:
                keys.append((record.spec.idempotency_key, record.task_id, stored.key_until))
        counts = {phase: 0 for phase in Phase}
        for record in records:
            counts[record.phase] += 1
            if not record.journal_row:  # a store that keeps no row keys
                last_row += 1
                record.journal_row = last_row
        self._last_row = last_row
        self._broker.restore(records, keys)
        for key, value in self._store.load_state():
            if key.startswith(STATE_PERIODIC):
                self._broker.periodic.restore(decode_periodic(value))
            elif key.startswith(STATE_RATE):
                self._broker.restore_rate_limit(key.removeprefix(STATE_RATE), decode_rate(value))
        self._lifecycle.track_changes()
        self._arm_tick()
        return Recovered(
            counts[Phase.QUEUED],
            counts[Phase.SCHEDULED],
            counts[Phase.LEASED],
            counts[Phase.FINISHED],
            time.monotonic() - started,
            counts[Phase.WAITING],
        )

    def check_writable(self) -> None:
        """Raise JournalUnavailable while writes fail: no new work is accepted then."""
        if self._failed is not None:
            raise self._failed

    async def durable(self) -> None:
        """Return once every change made so far is written.

        Raises:
            JournalUnavailable: The batch holding them could not be written.
        """
        group = self._target()
        if group is None:
            return
        if group is self._writing and self._inline is not None and not self._with_thread:
            self._write_inline()  # this caller would only wait for it
            if self._failed is not None:
                raise self._failed
            return
        future: asyncio.Future[BrokerError | None] = self._loop.create_future()
        group.futures.append(future)
        error = await future
        if error is not None:
            raise error

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every change made so far is written (it waits out failures)."""
        group = self._target()
        if group is None:
            callback()
        else:
            group.callbacks.append(callback)

    def kick(self) -> None:
        """Hand the changes noted so far to the writer, unless a write is in flight."""
        if self._writing is not None or self._retry is not None or self._closed:
            return
        changes = self._lifecycle.take_changes()
        periodic = self._lifecycle.take_periodic_changes()
        rates = self._lifecycle.take_rate_changes()
        if not changes and not periodic and not rates:
            return
        batch = self._encode(changes)
        for name, entry in periodic.items():
            batch.state[STATE_PERIODIC + name] = None if entry is None else encode_periodic(entry)
        for name, rate in rates.items():
            batch.state[STATE_RATE + name] = None if rate is None else encode_rate(rate)
        self._periodic_writing = periodic  # given back if the write fails
        self._rates_writing = rates
        group = self._next or _Group()
        self._next = None
        self._writing = group
        if not self._with_thread and len(batch) <= self._inline_rows:
            self._inline_batch = (changes, batch)
            self._inline = self._loop.call_soon(self._write_inline)
        else:
            self._to_thread(changes, batch)

    async def close(self) -> None:
        """Write what is left, then close the store (the server has stopped serving)."""
        try:
            self.kick()
            await self.durable()
        except JournalUnavailable as error:
            logger.error("closing with changes the journal could not write: %s", error)
        self._closed = True
        for handle in (self._retry, self._tick, self._inline):
            if handle is not None:
                handle.cancel()
        await self._loop.run_in_executor(self._executor, self._store.close)
        self._executor.shutdown()

    # -- internals ---------------------------------------------------------------------------

    def _target(self) -> _Group | None:
        """The group whose batch will hold every change made so far (None: all written)."""
        lifecycle = self._lifecycle
        if lifecycle.changes or lifecycle.periodic_changes or lifecycle.rate_changes:
            if self._next is None:
                self._next = _Group()
            return self._next
        if self._retry is not None:  # a failed batch's changes went back into changes
            return self._next
        return self._writing

    def _encode(self, changes: dict[str, TaskRecord | None]) -> Batch:
        batch = Batch()
        key_until = self._broker.idempotency_until
        tasks = self._lifecycle.tasks
        rows = batch.rows
        for task_id, record in changes.items():
            if record is None:
                batch.deletes.append(task_id)
            else:
                row = encode(record, key_until)
                if record.phase is Phase.QUEUED and tasks.get(task_id) is record:
                    row.held = True  # parked at a gate (a queued task leaves, for a pool)
                if not row.row:  # its first write: the next key, so new rows append
                    self._last_row += 1
                    row.row = record.journal_row = self._last_row
                rows.append(row)
        lifecycle = self._lifecycle
        batch.deleted_rows, lifecycle.dropped_rows = lifecycle.dropped_rows, []
        return batch

    def _write_inline(self) -> None:
        """Write the batch kick() kept for the loop's thread (see the module docstring)."""
        assert self._inline_batch is not None
        if self._inline is not None:
            self._inline.cancel()
        self._inline = None
        (changes, batch), self._inline_batch = self._inline_batch, None
        if self._with_thread:  # a checkpoint went to the thread meanwhile: never overlap
            self._to_thread(changes, batch)
            return
        problem: BaseException | None = None
        try:
            self._store.write(batch)
        except Exception as error:  # the store's error or OSError: refused like a thread's
            problem = error
        self._written(changes, batch, problem)

    def _to_thread(self, changes: dict[str, TaskRecord | None], batch: Batch) -> None:
        self._with_thread += 1
        written = self._executor.submit(self._store.write, batch)
        written.add_done_callback(
            lambda done: self._loop.call_soon_threadsafe(
                self._back_from_thread, changes, batch, done.exception()
            )
        )

    def _back_from_thread(
        self, changes: dict[str, TaskRecord | None], batch: Batch, problem: BaseException | None
    ) -> None:
        self._with_thread -= 1
        self._written(changes, batch, problem)

    def _written(
        self,
        changes: dict[str, TaskRecord | None],
        batch: Batch,
        problem: BaseException | None,
    ) -> None:
        group = self._writing
        assert group is not None
        self._writing = None
        if problem is None:
            self._unsynced = True
            self._rows_unchecked += len(batch.rows)
            if self._rows_unchecked >= CHECKPOINT_ROWS:
                self._maintain()
            if self._failed is not None:
                logger.warning("journal writes succeed again: accepting new work")
                self._failed = None
            _resolve(group, None)
        else:
            self._give_back(changes, batch)
            self._give_back_state(self._periodic_writing, self._rates_writing)
            if self._failed is None:
                logger.error(
                    "journal write failed, refusing new work until a write succeeds: %s", problem
                )
            self._failed = JournalUnavailable(
                f"the broker cannot record new work: its journal write failed ({problem})"
            )
            if self._next is None:
                self._next = _Group()
            self._next.callbacks.extend(group.callbacks)
            group.callbacks = []
            _resolve(group, self._failed)
            self._retry = self._loop.call_later(RETRY_INTERVAL, self._retry_write)
        self.kick()

    def _give_back(self, changes: dict[str, TaskRecord | None], batch: Batch) -> None:
        """Put a failed batch's changes back so the next write carries them."""
        for row in batch.rows:
            record = changes[row.task_id]
            if row.spec is not None and record is not None:
                record.journal_row = 0  # never written: its spec goes in the next batch
        lifecycle = self._lifecycle
        lifecycle.dropped_rows[:0] = batch.deleted_rows
        pending = lifecycle.changes
        if pending is None:
            return
        for task_id, record in changes.items():
            pending.setdefault(task_id, record)

    def _give_back_state(
        self, periodic: dict[str, PeriodicEntry | None], rates: dict[str, float | None]
    ) -> None:
        """Put a failed batch's periodic entries and rate overrides back (newer notes win)."""
        lifecycle = self._lifecycle
        if lifecycle.periodic_changes is not None:
            for name, entry in periodic.items():
                lifecycle.periodic_changes.setdefault(name, entry)
        if lifecycle.rate_changes is not None:
            for name, rate in rates.items():
                lifecycle.rate_changes.setdefault(name, rate)

    def _retry_write(self) -> None:
        self._retry = None
        self.kick()

    def _arm_tick(self) -> None:
        self._tick = self._loop.call_later(SYNC_INTERVAL, self._on_tick)

    def _on_tick(self) -> None:
        """Once a second: fsync and checkpoint after writes, and write what nothing flushed."""
        if self._closed:
            return
        if self._unsynced:
            self._maintain()
        self.kick()
        self._arm_tick()

    def _maintain(self) -> None:
        """Hand the writer thread an fsync ("everysec") and a checkpoint."""
        self._unsynced = False
        self._rows_unchecked = 0
        self._with_thread += 1
        done = self._executor.submit(self._sync_and_checkpoint)
        done.add_done_callback(lambda _: self._loop.call_soon_threadsafe(self._maintained))

    def _maintained(self) -> None:
        self._with_thread -= 1

    def _sync_and_checkpoint(self) -> None:
        try:
            if self._fsync == "everysec":
                self._store.sync()
            self._store.checkpoint()
        except Exception:
            logger.exception("journal fsync or checkpoint failed")


def _resolve(group: _Group, error: BrokerError | None) -> None:
    for future in group.futures:
        if not future.done():
            future.set_result(error)
    for callback in group.callbacks:
        try:
            callback()
        except Exception:
            logger.exception("journal callback failed")
