"""One broker's part in a cluster of brokers sharing a PostgreSQL database.

Each broker keeps its in-memory core, holding only the tasks it *owns*: the ones its workers
run, the ones waiting for an eta or a retry backoff, and the finished ones it ran or reads
(mirrors). Queued tasks live in the database's shared pool instead:

- **Submit anywhere.** A task submitted to a broker whose workers have no room is written to
  the pool (no owner, a place in line) in the same batch that records it, and a NOTIFY on
  ``celeriac_queued`` names its queue. Nothing queued stays in a broker's memory at the end
  of a loop turn (:meth:`Cluster.after_turn` hands it to the pool).
- **Claim for credit.** A broker whose workers have credit in a queue claims that many tasks
  (``FOR UPDATE SKIP LOCKED``, one round trip for every queue) when woken by that NOTIFY or
  when credit appears, and dispatches them through its core as usual.
- **Results reach waiters anywhere.** Every batch that finishes tasks sends their ids on
  ``celeriac_finished``. A broker with a waiter on one of them (a held GetResult, a session's
  push) reads the row and keeps it as a finished record (a mirror): the core then answers and
  wakes waiters exactly as for its own tasks. No polling: the wait is held, the wake-up is the
  NOTIFY.
- **A worker that moves** here from another broker names its leases in its Hello: their tasks
  are taken over from whichever broker holds them before its session opens, so it keeps them.
- **Running states.** STARTED acks and custom states (``update_state``, meta included) are
  written to the task's row (``Lifecycle.share_running``), so a lookup from any broker reads
  them; a short task's start and finish reported together are still one row write.
- **Counts.** Every heartbeat also counts the pool by queue: queue depths (``queues``) and
  ``max_queued`` count it, as fresh as that count.
- **Failover.** Brokers beat a heartbeat every ``broker_timeout / 5`` s. A broker silent for
  ``broker_timeout`` is presumed dead: the first broker to notice deletes it and adopts its
  rows (the same restore as after a restart: running tasks wait ``lease_grace`` for their
  worker to come back, then are queued again). A broker stopping cleanly gives its rows up
  and the others adopt them at their next beat.
- **Periodic tasks run on one broker.** Every broker keeps the entries its workers declare
  (journaled to ``celeriac_state``; a NOTIFY on ``celeriac_periodic`` keeps the others'
  copies current), but only the *leader* arms their timers: the broker holding a session
  advisory lock, tried at every heartbeat. Each run is journaled in the same transaction as
  its entry's progress, so the broker that takes the lead after the leader died (PostgreSQL
  frees the lock when the leader's session ends) reads where it stopped: no tick runs twice.
- **Rate limits across brokers.** A broker's rate gate takes its tokens from the database
  (:meth:`Cluster.ask_tokens`, the gates' budget): a reservation moves one row per task name
  on by the tokens' span, so tokens are spaced by ``1/rate`` however many brokers ask.
- **Concurrency limits across brokers.** A task with a ``concurrency_limit`` runs once it
  holds one of its key's slots in ``celeriac_slots`` (:meth:`Cluster.ask_slot`, for the
  oldest task a gate holds back, one at a time); the end of its lease, on whichever broker,
  gives the slot back (batched) and a NOTIFY on ``celeriac_slots`` tells brokers with tasks
  waiting for that key to ask again.
- **Workflows across brokers.** A task waiting for parents another broker holds (a chain's
  first link handed to the pool, a parent named by a later submit) is registered as waiting
  for them; their finish comes as a ``celeriac_finished`` NOTIFY, the broker reads the parent
  as a mirror and the core settles its dependants. A broker that claims (or adopts) a workflow
  task reads its parents first, so the worker gets their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from broker.cluster.database import DROP_CHANNEL, REVOKE_CHANNEL, SLOTS_CHANNEL, ClusterDatabase
from broker.core.model import (
    DependencyMode,
    Phase,
    RevokeOutcome,
    SubmitResult,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from broker.errors import JournalUnavailable
from broker.journal.postgres_store import (
    FINISHED_CHANNEL,
    PERIODIC_CHANNEL,
    QUEUED_CHANNEL,
    first_line,
)
from broker.journal.rows import StoredTask, decode, decode_periodic

if TYPE_CHECKING:
    from broker.service.runtime import Runtime

logger = logging.getLogger(__name__)

# The most tasks one claim takes for one queue.
MAX_CLAIM = 1000
# Seconds before listening again after the listening connection was lost.
_RELISTEN_DELAY = 1.0


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """Raise a database error as JournalUnavailable: the call is refused with UNAVAILABLE."""
    try:
        yield
    except psycopg.Error as error:
        raise JournalUnavailable(
            f"the broker cannot reach the shared database ({first_line(error)})"
        ) from None


@dataclass(slots=True)
class Reservation:
    """What :meth:`Cluster.reserve` found: repeats answered, by spec index, and keys taken."""

    answers: dict[int, SubmitResult] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)


class Cluster:
    """This broker's membership in the cluster (see the module docstring).

    Args:
        runtime: The broker's runtime (its core and its loop).
        database: The connection for claims, reads and heartbeats.
        address: The address this broker serves, shown in ``celeriac_brokers``.
        timeout: Seconds of silence after which a broker is presumed dead.
    """

    def __init__(
        self, runtime: Runtime, database: ClusterDatabase, address: str, timeout: float
    ) -> None:
        self._runtime = runtime
        self._core = runtime.broker
        self._core.lifecycle.share_running = True  # other brokers read STARTED and custom states
        self._db = database
        self._address = address
        self._timeout = timeout
        self._tasks: list[asyncio.Task[None]] = []
        # Queues whose pool a claim found empty, and the wake-ups seen per queue ("" for all)
        # so that a claim that raced a wake-up does not mark its queue empty.
        self._empty: set[str] = set()
        self._wakeups: Counter[str] = Counter()
        self._claiming: asyncio.Task[None] | None = None
        self._claim_again = False
        # Foreign ids being looked up, and those of them a wake-up said finished meanwhile.
        self._looking: Counter[str] = Counter()
        self._finished_meanwhile: set[str] = set()
        self._to_mirror: set[str] = set()
        self._mirroring: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._beat_failing = False
        # Periodic entries other brokers changed, to read (None in the set: all of them).
        self._periodic_changed: set[str | None] = set()
        self._periodic_syncing: asyncio.Task[None] | None = None
        database.on_lost_lead = self._lost_lead
        self._reserving: set[asyncio.Task[None]] = set()
        # Concurrency slots to give back (key, task id), written one batch at a time.
        self._to_free: list[tuple[str, str]] = []
        self._freeing: asyncio.Task[None] | None = None
        self._core.lifecycle.gates.share(self)
        self._core.workflows.on_wait_elsewhere = self._look_for
        # Replacements looked for (Task.replace through another broker, or handed to the pool).
        self._looked_for: set[str] = set()
        self._looking_for: asyncio.Task[None] | None = None

    @property
    def broker_id(self) -> str:
        """This broker's id, the owner of its rows."""
        return self._db.broker_id

    async def start(self) -> None:
        """Register, adopt what dead brokers left, and start listening and beating."""
        await self._db.register(self._address)
        await self._beat()
        await self._elect()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._heartbeats())]
        await self._listening.wait()
        logger.info(
            "sharing the database as broker %s (brokers silent for %g s are taken over)",
            self.broker_id,
            self._timeout,
        )

    async def stop(self) -> None:
        """Stop, give this broker's tasks up to the others, and close (after the journal)."""
        tasks = [*self._tasks, *self._reserving]
        tasks += [task for task in (self._freeing, self._looking_for) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._db.on_lost_lead = None  # closing lets the lead go: nothing to warn about
        try:
            await self._db.leave()
        except psycopg.Error as error:
            logger.warning(
                "could not give up this broker's tasks (%s): others take them over after %g s",
                first_line(error),
                self._timeout,
            )
        await self._db.close()

    # -- the loop turn -----------------------------------------------------------------------

    def after_turn(self) -> None:
        """Hand queued tasks to the pool, and claim for idle credit (before the journal kick)."""
        lifecycle = self._core.lifecycle
        for queue in lifecycle.queues.values():
            if len(queue):
                for record in queue.drain():
                    lifecycle.hand_off(record)
        self._maybe_claim()

    # -- lookups for the services ------------------------------------------------------------

    async def lookup(self, task_ids: Collection[str]) -> dict[str, TaskRecord]:
        """Read the tasks of ``task_ids`` this broker does not hold from the database.

        Finished ones become mirrors in the core, so every read path finds them. Unfinished ones
        are returned as read-only snapshots (their state for an answer, and the ids a wait may
        hold for: their finish wakes it). Ids found nowhere are left out.

        Raises:
            JournalUnavailable: The database cannot be read now.
        """
        missing = [task_id for task_id in task_ids if self._core.get(task_id) is None]
        if not missing:
            return {}
        self._looking.update(missing)
        try:
            rows = await self._db.fetch(missing)
            raced = [row.task_id for row in rows if row.task_id in self._finished_meanwhile]
            if raced:  # finished while the first read was on its way: read those again
                again = {row.task_id: row for row in await self._db.fetch(raced)}
                rows = [again.get(row.task_id, row) for row in rows]
        except psycopg.Error as error:
            raise JournalUnavailable(
                f"the broker cannot read the shared database ({first_line(error)})"
            ) from None
        finally:
            self._looking.subtract(missing)
            for task_id in missing:
                if self._looking[task_id] <= 0:
                    del self._looking[task_id]
                    self._finished_meanwhile.discard(task_id)
        return {record.task_id: record for record in self._mirror(rows)}

    async def parents_elsewhere(
        self, specs: Iterable[TaskSpec], besides: Collection[str] = ()
    ) -> set[str]:
        """Read the parents ``specs`` name that this broker does not hold (nor ``besides``).

        Finished ones become mirrors (their results are a dependant's inputs); the ids of the
        unfinished ones, which other brokers hold, are returned for
        :meth:`~broker.core.workflows.Workflows.parents_elsewhere`.

        Raises:
            JournalUnavailable: The database cannot be read now.
        """
        missing = {
            parent
            for spec in specs
            for parent in spec.depends_on
            if parent not in besides and self._core.get(parent) is None
        }
        return set(await self.lookup(missing)) if missing else set()

    async def revoke(
        self, task_ids: list[str], terminate: bool, reason: str
    ) -> dict[str, RevokeOutcome]:
        """Revoke tasks this broker does not hold: wherever they are, they never run.

        Queued ones are taken out of the pool and revoked here; those another broker holds
        are revoked there, on a NOTIFY it reads (their outcome is then CANCEL_SENT: asked);
        finished ones are ALREADY_FINISHED. Ids found nowhere are left out (UNKNOWN).

        Raises:
            JournalUnavailable: The database cannot be reached now.
        """
        try:
            taken = await self._db.take(task_ids)
            if taken:
                self._core.restore([decode(row) for row in taken], [])
            outcomes = dict(
                zip(
                    [row.task_id for row in taken],
                    self._core.revoke(
                        [row.task_id for row in taken], terminate=terminate, reason=reason
                    ),
                    strict=True,
                )
            )
            rest = [task_id for task_id in task_ids if task_id not in outcomes]
            held_elsewhere = await self.lookup(rest) if rest else {}
            for task_id in rest:
                if task_id in held_elsewhere:
                    outcomes[task_id] = RevokeOutcome.CANCEL_SENT
                elif (record := self._core.get(task_id)) is not None and record.ready:
                    outcomes[task_id] = RevokeOutcome.ALREADY_FINISHED
            if held_elsewhere:
                await self._db.ask_to_revoke(list(held_elsewhere), terminate, reason)
        except psycopg.Error as error:
            raise JournalUnavailable(
                f"the broker cannot reach the shared database ({first_line(error)})"
            ) from None
        self._runtime.changed()
        return outcomes

    def ask_tokens(self, name: str, per_second: float, count: int) -> None:
        """Reserve ``count`` rate tokens of task ``name`` in the database (the gates' budget)."""
        task = asyncio.get_running_loop().create_task(self._reserve(name, per_second, count))
        self._reserving.add(task)
        task.add_done_callback(self._reserving.discard)

    def ask_slot(self, key: str, limit: int, task_id: str) -> None:
        """Take one of ``key``'s slots for ``task_id`` in the database (the gates' budget)."""
        task = asyncio.get_running_loop().create_task(self._take_slot(key, limit, task_id))
        self._reserving.add(task)
        task.add_done_callback(self._reserving.discard)

    def free_slot(self, key: str, task_id: str) -> None:
        """Give ``task_id``'s slot of ``key`` back, with the others freed meanwhile."""
        self._to_free.append((key, task_id))
        if self._freeing is None:
            self._freeing = asyncio.get_running_loop().create_task(self._free_slots())

    async def reserve(self, specs: Sequence[TaskSpec]) -> Reservation:
        """Reserve the idempotency keys of new tasks across brokers.

        A spec with an idempotency key this broker does not know gets it reserved in
        ``celeriac_keys`` (one round trip for the batch) under the id its task will have (set
        in ``spec.task_id`` now, unless it names one): a key another broker reserved is
        answered as that broker would (its task's id, not created, its state from its row,
        PENDING while it has none), and that spec is not to be submitted here.

        Raises:
            JournalUnavailable: The database cannot be reached now (nothing is accepted).
        """
        reservation = Reservation()
        wanted: dict[str, tuple[str, float]] = {}
        keyed: list[tuple[int, str]] = []
        for index, spec in enumerate(specs):
            if not spec.idempotency_key or self._core.known(spec):
                continue
            if not spec.task_id:
                spec.task_id = self._core.new_task_id()
            key = f"k:{spec.idempotency_key}"
            wanted.setdefault(key, (spec.task_id, self._core.idempotency_until(spec)))
            keyed.append((index, key))
        if not wanted:
            return reservation
        with _database_errors():
            won, holders = await self._db.reserve(wanted)
        reservation.keys = list(won)
        for index, key in keyed:
            # The key may name another broker's task, or an earlier spec's in this batch.
            task_id, row = holders.get(key, (specs[index].task_id, None))
            if task_id != specs[index].task_id:
                state = TaskState.PENDING if row is None else decode(row).state
                reservation.answers[index] = SubmitResult(task_id, False, state)
        return reservation

    async def release(self, reservation: Reservation) -> None:
        """Give up the keys of a reservation whose tasks were refused after all."""
        if reservation.keys:
            with contextlib.suppress(psycopg.Error):  # they lapse by themselves
                await self._db.release(reservation.keys)

    async def adopt_finished(self, task_ids: Collection[str] | None, queue: str = "") -> None:
        """Take finished tasks over from the brokers holding them, to forget or requeue here.

        Args:
            task_ids: The tasks (those unfinished or unknown are left alone); None for every
                dead letter of ``queue`` ("" for every queue).
            queue: See ``task_ids``.

        Raises:
            JournalUnavailable: The database cannot be reached now.
        """
        with _database_errors():
            taken = await self._db.adopt_finished(task_ids, queue)
        fresh = [row for row in taken if self._core.get(row.task_id) is None]
        if fresh:
            self._core.restore([decode(row) for row in fresh], [])

    async def adopt_leases(self, worker_id: str, lease_ids: Collection[str]) -> None:
        """Take over what a worker that moved here from another broker runs (its Hello).

        The leases it names that this broker does not hold are taken from whichever broker
        does (dead, or alive and told to let go), and restored as a worker's after a restart:
        the worker's new session then reclaims them, so its outcomes are accepted here. When
        the database cannot be reached, the worker connects anyway and its leases come back
        with the dead broker's tasks, as before.
        """
        leases = self._core.lifecycle.leases
        unknown = [lease_id for lease_id in lease_ids if leases.get(lease_id) is None]
        if not unknown:
            return
        try:
            rows = await self._db.adopt_leases(worker_id, unknown)
        except psycopg.Error as error:
            logger.warning(
                "could not take over the leases of worker %s: %s", worker_id, first_line(error)
            )
            return
        if rows:
            self._core.restore([decode(row) for row in rows], [])
            logger.info(
                "took over %d running tasks of worker %s from another broker", len(rows), worker_id
            )

    async def dead_letters(self, queue: str) -> list[TaskRecord]:
        """Every broker's dead letters as written (of ``queue``, or all when ""), unordered.

        Raises:
            JournalUnavailable: The database cannot be read now.
        """
        with _database_errors():
            rows = await self._db.dead_letters(queue)
        return [decode(row) for row in rows]

    async def take_queue(self, queue: str) -> None:
        """Bring the pool's tasks of ``queue`` here (queued, as this broker's), to purge them.

        Raises:
            JournalUnavailable: The database cannot be reached now.
        """
        with _database_errors():
            taken = await self._db.take_queue(queue)
        if taken:
            self._core.restore([decode(row) for row in taken], [])

    # -- internals ---------------------------------------------------------------------------

    async def _take_slot(self, key: str, limit: int, task_id: str) -> None:
        gates = self._core.lifecycle.gates
        try:
            granted = await self._db.take_slot(key, task_id, limit)
        except psycopg.Error as error:
            logger.warning("taking a concurrency slot failed: %s", first_line(error))
            gates.slot_answer(key, task_id, False)
            await asyncio.sleep(_RELISTEN_DELAY)
            gates.slot_freed(key)  # ask again
            return
        gates.slot_answer(key, task_id, granted)
        self._core.dispatch()
        self._runtime.changed()

    async def _free_slots(self) -> None:
        try:
            while self._to_free:
                slots, self._to_free = self._to_free, []
                try:
                    await self._db.free_slots(slots)
                except psycopg.Error as error:
                    logger.warning("giving concurrency slots back failed: %s", first_line(error))
                    self._to_free[:0] = slots
                    await asyncio.sleep(_RELISTEN_DELAY)
        finally:
            self._freeing = None

    async def _reserve(self, name: str, per_second: float, count: int) -> None:
        interval = 1.0 / per_second
        try:
            delay = await self._db.reserve_tokens(name, count * interval)
        except psycopg.Error as error:
            logger.warning("reserving rate tokens of %s failed: %s", name, first_line(error))
            await asyncio.sleep(_RELISTEN_DELAY)
            starts: list[float] = []  # none: the gate asks again
        else:
            start = self._core.clock.monotonic() + delay
            starts = [start + index * interval for index in range(count)]
        self._core.lifecycle.gates.grant(name, starts)
        self._runtime.changed()

    def _mirror(self, rows: list[StoredTask]) -> list[TaskRecord]:
        """Keep finished rows as mirrors (waking their waiters); return the unfinished ones."""
        finished: list[TaskRecord] = []
        unfinished: list[TaskRecord] = []
        for stored in rows:
            if self._core.get(stored.task_id) is not None:
                continue
            record = decode(stored)
            (finished if record.phase is Phase.FINISHED else unfinished).append(record)
        if finished:
            self._core.restore(finished, [])  # may release tasks that waited for them
            self._core.dispatch()
            self._runtime.changed()
        return unfinished

    def _maybe_claim(self) -> None:
        if self._claiming is not None:
            self._claim_again = True
            return
        wanted = {
            queue: min(credit, MAX_CLAIM)
            for queue, credit in self._core.idle_credit().items()
            if queue not in self._empty
        }
        if wanted:
            self._claim_again = False
            self._claiming = asyncio.get_running_loop().create_task(self._claim(wanted))

    async def _claim(self, wanted: dict[str, int]) -> None:
        seen = {queue: (self._wakeups[queue], self._wakeups[""]) for queue in wanted}
        full = False
        try:
            claimed = await self._db.claim(wanted)
        except psycopg.Error as error:
            logger.warning("claiming queued tasks failed: %s", first_line(error))
            claimed = {}
        finally:
            self._claiming = None
        records: list[TaskRecord] = []
        for queue, rows in claimed.items():
            records.extend(decode(row) for row in rows)
            if len(rows) < wanted[queue]:
                if seen[queue] == (self._wakeups[queue], self._wakeups[""]):
                    self._empty.add(queue)
            else:
                full = True
        if records:
            unread = await self._read_inputs(records)
            self._core.restore(records, [])
            for record in unread:  # back to the pool with the next batch, never run without
                self._core.lifecycle.queue(record.spec.queue).discard(record)
                self._core.lifecycle.hand_off(record)
            self._core.dispatch()
            self._runtime.changed()
        if full or self._claim_again:
            self._maybe_claim()

    async def _read_inputs(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """Read the parents whose results claimed workflow tasks take; returns those unread."""
        taking = [
            record
            for record in records
            if record.spec.depends_on
            and record.spec.dependency_mode not in (DependencyMode.IGNORE, DependencyMode.BARRIER)
        ]
        if not taking:
            return []
        try:
            await self.parents_elsewhere(record.spec for record in taking)
        except JournalUnavailable as error:
            logger.warning("claimed workflow tasks go back to the pool: %s", error)
            return taking
        return []

    async def _listen(self) -> None:
        while True:
            try:
                async for channel, payload in self._db.notifications():
                    try:
                        self._on_notification(channel, payload)
                    except Exception:
                        logger.exception("handling a notification on %s failed", channel)
            except psycopg.Error as error:
                log = logger.debug if self._beat_failing else logger.warning
                log(
                    "listening for other brokers failed (%s); again in %g s",
                    first_line(error),
                    _RELISTEN_DELAY,
                )
            await asyncio.sleep(_RELISTEN_DELAY)

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == FINISHED_CHANNEL:
            self._on_finished(payload.split(","))
        elif channel == REVOKE_CHANNEL:
            self._on_revoke(payload)
        elif channel == PERIODIC_CHANNEL:
            self._on_periodic(payload)
        elif channel == SLOTS_CHANNEL:
            self._on_slots_freed(json.loads(payload))
        elif channel == DROP_CHANNEL:
            self._on_drop(payload)
        elif channel == QUEUED_CHANNEL:
            for queue in payload.split(",") if payload else ("",):
                self._wakeups[queue] += 1
                if queue:
                    self._empty.discard(queue)
                else:
                    self._empty.clear()
            self._maybe_claim()
        else:  # listening (again): whatever was sent before is unknown
            self._listening.set()
            self._wakeups[""] += 1
            self._empty.clear()
            self._maybe_claim()
            self._on_finished(self._core.lifecycle.results.waited_ids())
            self._on_finished(self._core.workflows.awaited_ids())
            self._sync_periodic({None})
            self._on_slots_freed(list(self._core.lifecycle.gates.slots))

    def _on_revoke(self, payload: str) -> None:
        try:
            request = json.loads(payload)
            task_ids = [str(task_id) for task_id in request["ids"]]
            terminate, reason = bool(request["terminate"]), str(request["reason"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored an unreadable revoke from another broker")
            return
        held = [task_id for task_id in task_ids if self._core.get(task_id) is not None]
        if held:
            self._core.revoke(held, terminate=terminate, reason=reason)
            self._runtime.changed()

    def _on_slots_freed(self, keys: list[str]) -> None:
        gates = self._core.lifecycle.gates
        for key in keys:
            gates.slot_freed(str(key))

    # -- periodic tasks ----------------------------------------------------------------------

    async def _elect(self) -> None:
        """Take the lead if no broker holds it (at start and at every beat)."""
        if self._db.leading:
            return
        try:
            if not await self._db.lead():
                return
            stored = await self._db.periodic_entries()
        except psycopg.Error as error:
            logger.debug("taking the lead failed: %s", first_line(error))
            return
        entries = []
        for name, row in stored.items():
            try:
                entries.append(decode_periodic(row))
            except ValueError as problem:
                logger.warning("periodic task %s skipped: %s", name, problem)
        if not self._db.leading:  # lost while reading
            return
        self._core.periodic.lead(entries)
        self._runtime.changed()
        logger.info(
            "this broker runs the periodic tasks of the brokers sharing the database (%d entries)",
            len(self._core.periodic.entries),
        )

    def _lost_lead(self) -> None:
        self._core.periodic.follow()
        logger.warning(
            "this broker lost the lead (its database session ended): periodic tasks run on "
            "whichever broker takes it"
        )

    def _on_periodic(self, payload: str) -> None:
        sender, _, names = payload.partition(" ")
        if sender == self.broker_id:
            return
        try:
            changed = {str(name) for name in json.loads(names)}
        except (ValueError, TypeError):
            logger.warning("ignored an unreadable periodic change from another broker")
            return
        self._sync_periodic(changed)

    def _sync_periodic(self, names: Collection[str | None]) -> None:
        self._periodic_changed.update(names)
        if self._periodic_syncing is None:
            self._periodic_syncing = asyncio.get_running_loop().create_task(self._read_periodic())

    async def _read_periodic(self) -> None:
        periodic = self._core.periodic
        try:
            while self._periodic_changed:
                changed, self._periodic_changed = self._periodic_changed, set()
                everything = None in changed
                names = None if everything else {name for name in changed if name is not None}
                try:
                    stored = await self._db.periodic_entries(names)
                except psycopg.Error as error:
                    logger.warning("reading periodic tasks failed: %s", first_line(error))
                    return
                # A full read (after listening again) adds and updates but removes nothing: an
                # entry declared here may not be written yet.
                wanted = set(stored) if names is None else names
                for name in wanted:
                    row = stored.get(name)
                    try:
                        periodic.sync(name, None if row is None else decode_periodic(row))
                    except ValueError as problem:
                        logger.warning("periodic task %s skipped: %s", name, problem)
                self._runtime.changed()
        finally:
            self._periodic_syncing = None

    def _on_drop(self, payload: str) -> None:
        """Another broker took finished tasks over: let go of them here."""
        try:
            request = json.loads(payload)
            sender, task_ids = str(request["from"]), [str(i) for i in request["ids"]]
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored an unreadable take-over from another broker")
            return
        if sender != self.broker_id:
            for task_id in task_ids:
                self._core.lifecycle.disown(task_id)

    def _look_for(self, task_id: str) -> None:
        """Read a replacement this broker does not hold: finished, running elsewhere, or lost."""
        self._looked_for.add(task_id)
        if self._looking_for is None:
            self._looking_for = asyncio.get_running_loop().create_task(self._read_looked_for())

    async def _read_looked_for(self) -> None:
        try:
            while self._looked_for:
                task_ids, self._looked_for = self._looked_for, set()
                try:
                    rows = await self._db.fetch(task_ids)
                except psycopg.Error as error:  # waits for its finish wake-up instead
                    logger.warning("looking for replacements failed: %s", first_line(error))
                    return
                self._mirror(rows)  # a finished one settles the replaced task
                found = {row.task_id for row in rows}
                workflows = self._core.workflows
                for task_id in task_ids - found:
                    if self._core.get(task_id) is None:
                        workflows.replacement_lost(task_id)
                self._runtime.changed()
        finally:
            self._looking_for = None

    def _on_finished(self, task_ids: Collection[str]) -> None:
        results = self._core.lifecycle.results
        workflows = self._core.workflows
        for task_id in task_ids:
            if task_id in self._looking:
                self._finished_meanwhile.add(task_id)
            elif (results.waited(task_id) or workflows.awaits(task_id)) and self._core.get(
                task_id
            ) is None:
                self._to_mirror.add(task_id)
        if self._to_mirror and self._mirroring is None:
            self._mirroring = asyncio.get_running_loop().create_task(self._mirror_finished())

    async def _mirror_finished(self) -> None:
        try:
            while self._to_mirror:
                task_ids, self._to_mirror = self._to_mirror, set()
                try:
                    rows = await self._db.fetch(task_ids)
                except psycopg.Error as error:
                    logger.warning("reading finished tasks failed: %s", first_line(error))
                    return
                self._mirror(rows)
        finally:
            self._mirroring = None

    async def _heartbeats(self) -> None:
        interval = self._timeout / 5
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
                await self._elect()
            except Exception:  # a bug here must not stop the heartbeat (others would adopt)
                logger.exception("broker heartbeat failed")

    async def _beat(self) -> None:
        try:
            alive, dead, rows = await self._db.heartbeat_and_take_over(self._address, self._timeout)
        except psycopg.Error as error:
            if not self._beat_failing:  # once per outage, not once per beat
                logger.warning("broker heartbeat failed, retrying: %s", first_line(error))
            self._beat_failing = True
            return
        if self._beat_failing:
            logger.warning("broker heartbeat succeeds again")
            self._beat_failing = False
        if not alive:
            logger.warning(
                "this broker was presumed dead (no heartbeat for %g s) and its tasks taken "
                "over; it is registered again and carries on with new work",
                self._timeout,
            )
        if rows:
            await self._adopt(rows, dead)
        await self.count_pool()

    async def count_pool(self) -> None:
        """Count the pool for queue depths and max_queued (fresh to one heartbeat)."""
        try:
            self._core.set_pool_depths(await self._db.pool_depths())
        except psycopg.Error as error:
            logger.debug("counting the shared pool failed: %s", first_line(error))

    async def _adopt(self, rows: list[StoredTask], dead: list[str]) -> None:
        records = [decode(row) for row in rows]
        keys = [
            (record.spec.idempotency_key, record.task_id, row.key_until)
            for record, row in zip(records, rows, strict=True)
            if row.key_until is not None and record.spec.idempotency_key
        ]
        fresh = [record for record in records if self._core.get(record.task_id) is None]
        adopted = {record.task_id for record in fresh}
        try:  # parents held elsewhere: waited for, or read for their results
            elsewhere = await self.parents_elsewhere(
                (record.spec for record in fresh if not record.ready), besides=adopted
            )
        except JournalUnavailable as error:
            # Wait for every parent not held: one that finished meanwhile is read when
            # listening resumes (Cluster._on_notification), rather than run a task too early.
            logger.warning("reading the parents of tasks taken over failed: %s", error)
            elsewhere = {parent for record in fresh for parent in record.spec.depends_on}
        fresh = [record for record in fresh if self._core.get(record.task_id) is None]
        with self._core.workflows.parents_elsewhere(elsewhere):
            self._core.restore(fresh, keys)
        self._core.dispatch()
        self._runtime.changed()
        phases = Counter(record.phase.value for record in fresh)
        logger.info(
            "took over %d tasks from %s: %s",
            len(fresh),
            ", ".join(dead) or "brokers that stopped",
            ", ".join(f"{count} {phase}" for phase, count in sorted(phases.items())),
        )
