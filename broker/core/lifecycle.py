"""The task state machine: the single place where a task changes phase or state.

Every transition goes through one method here and emits one :class:`TaskEvent`. When a journal is
attached (:meth:`Lifecycle.track_changes`), every transition that must survive a restart also
notes the task in :attr:`Lifecycle.changes`, which the journal takes once per event-loop turn and
writes as one row per task (state, not history: many changes to a task in one turn are one row).
STARTED acks, custom states (``update_state``) and progress are not noted: a restart turns a
leased task back into a queued one (after the lease grace), so they would not be used. Brokers
sharing a database note STARTED acks and custom states (``share_running``), for other brokers
to read; a task's start and finish reported together are still one row write.

Callers (the :class:`~broker.core.broker.Broker` facade) decide *which* transition applies; this
module makes it happen consistently: depth counters, lease release, result storage, waiters and
dead letters.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.clock import Clock
from broker.core.deadletters import DeadLetters
from broker.core.events import EventKind, EventSink, TaskEvent
from broker.core.gates import Gates
from broker.core.leases import Lease, LeaseTable
from broker.core.model import Payload, Phase, TaskError, TaskRecord, TaskState
from broker.core.queues import ReadyQueue
from broker.core.results import ResultStore
from broker.core.sessions import Session
from broker.core.timers import TimerHeap

if TYPE_CHECKING:
    from broker.core.periodic import PeriodicEntry

logger = logging.getLogger(__name__)


class Lifecycle:
    """Task records and the transitions between their phases."""

    def __init__(
        self,
        clock: Clock,
        *,
        result_ttl: float,
        max_results: int,
        dead_letter_ttl: float,
        max_dead_letters: int,
        lease_margin: float,
        sink: EventSink | None = None,
    ) -> None:
        self.clock = clock
        self.timers = TimerHeap()
        self.tasks: dict[str, TaskRecord] = {}
        self.queues: dict[str, ReadyQueue] = {}
        self.gates = Gates(clock.monotonic, self.timers, self._reopen)
        self.leases = LeaseTable(self.gates)
        self.results = ResultStore(self.timers, max_results, self._drop_finished)
        self.dead_letters = DeadLetters(self.timers, max_dead_letters, self._dead_letter_expired)
        self.result_ttl = result_ttl
        self.dead_letter_ttl = dead_letter_ttl
        self.lease_margin = lease_margin
        self.sink = sink
        # Queues that gained ready tasks since the dispatcher last looked.
        self.dirty_queues: set[str] = set()
        self.unfinished = 0
        # Payload bytes held: arguments, results, progress and error texts of every record.
        self.held_bytes = 0
        # task id -> its record, or None once dropped; None (not tracking) in memory-only mode,
        # so the hot path there costs one test per transition.
        self.changes: dict[str, TaskRecord | None] | None = None
        # The journal rows (TaskRecord.journal_row) of the records dropped since the journal
        # last took them: a task id noted None may have a new record by the time it is taken.
        self.dropped_rows: list[int] = []
        # Periodic entry name -> its entry, or None once removed; journaled with ``changes``
        # in the same batch (a tick's run and its progress are one change).
        self.periodic_changes: dict[str, PeriodicEntry | None] | None = None
        # Note STARTED acks and custom states too (brokers sharing a database read them).
        self.share_running = False
        # Task name -> an operator's rate-limit override, or None once reset (journaled too).
        self.rate_changes: dict[str, float | None] | None = None
        self._seq_back = 0
        self._seq_front = 0
        self._scheduled: Counter[str] = Counter()
        self._leased: Counter[str] = Counter()
        # The records waiting for a due time, by task id: inspect lists them without a scan of
        # every task.
        self.scheduled: dict[str, TaskRecord] = {}
        # Told about every task that finished (broker.core.workflows releases its dependants),
        # and about every task that replaced itself (it takes its replacement's outcome).
        self.on_finished: Callable[[TaskRecord], None] | None = None
        self.on_replaced: Callable[[TaskRecord], None] | None = None

    # -- lookups -----------------------------------------------------------------------------

    def queue(self, name: str) -> ReadyQueue:
        """The ready queue called ``name``, created on first use."""
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = ReadyQueue(name)
        return queue

    def release_idle_queues(self, in_use: Callable[[str], bool]) -> int:
        """Drop every queue with no task in it, none scheduled or leased, and not ``in_use``.

        Queue names cost memory for as long as they are known; a producer that makes up names
        (one per request, say) must not grow the broker forever. Returns how many were dropped.
        """
        idle = [
            name
            for name, queue in self.queues.items()
            if not len(queue)
            and not self._scheduled[name]
            and not self._leased[name]
            and not in_use(name)
        ]
        for name in idle:
            self.queues.pop(name).release()
            self.dirty_queues.discard(name)
            self._scheduled.pop(name, None)
            self._leased.pop(name, None)
        return len(idle)

    def recount(self, record: TaskRecord) -> None:
        """Bring ``held_bytes`` up to date after ``record``'s payloads changed."""
        size = _payload_size(record)
        self.held_bytes += size - record.held_bytes
        record.held_bytes = size

    def _uncount(self, record: TaskRecord) -> None:
        self.held_bytes -= record.held_bytes
        record.held_bytes = 0

    def queue_names(self) -> set[str]:
        """Every queue with a ready queue, or with tasks scheduled or leased in it.

        A queue's tasks can all be scheduled with no ready queue made for it yet (tasks read
        back from the journal are queued only when they are due).
        """
        busy = (+self._scheduled).keys() | (+self._leased).keys()
        return self.queues.keys() | busy

    def scheduled_in(self, queue: str) -> int:
        """Tasks of ``queue`` waiting for an eta or retry backoff."""
        return self._scheduled[queue]

    def leased_in(self, queue: str) -> int:
        """Tasks of ``queue`` held by workers."""
        return self._leased[queue]

    def mono_at(self, wall: float) -> float:
        """The monotonic reading at which the wall clock will show ``wall``."""
        return self.clock.monotonic() + (wall - self.clock.time())

    def track_changes(self) -> None:
        """Start noting every persisted transition in :attr:`changes` (a journal is attached)."""
        if self.changes is None:
            self.changes = {}
            self.periodic_changes = {}
            self.rate_changes = {}

    def take_changes(self) -> dict[str, TaskRecord | None]:
        """The changes noted since the last call, and a fresh map for the next ones."""
        changes = self.changes or {}
        if self.changes is not None:
            self.changes = {}
        return changes

    def note_periodic(self, name: str, entry: PeriodicEntry | None) -> None:
        """Note a periodic entry's new state (None: removed) for the journal."""
        if self.periodic_changes is not None:
            self.periodic_changes[name] = entry

    def take_periodic_changes(self) -> dict[str, PeriodicEntry | None]:
        """The periodic changes noted since the last call, and a fresh map for the next ones."""
        changes = self.periodic_changes or {}
        if self.periodic_changes is not None:
            self.periodic_changes = {}
        return changes

    def note_rate_override(self, name: str, per_second: float | None) -> None:
        """Note an operator's rate-limit override of task ``name`` (None: reset)."""
        if self.rate_changes is not None:
            self.rate_changes[name] = per_second

    def take_rate_changes(self) -> dict[str, float | None]:
        """The rate overrides noted since the last call, and a fresh map for the next ones."""
        changes = self.rate_changes or {}
        if self.rate_changes is not None:
            self.rate_changes = {}
        return changes

    # -- transitions -------------------------------------------------------------------------

    def accept(self, record: TaskRecord, *, hold: bool = False) -> None:
        """Take a new task in: queue it, or schedule it when its eta is in the future.

        Args:
            record: The new task.
            hold: Keep it WAITING for the tasks it depends on (see :meth:`release`).
        """
        self.tasks[record.task_id] = record
        self.unfinished += 1
        if record.args is not None:
            self.recount(record)
        spec = record.spec
        if self.sink is not None:
            self._emit(EventKind.ACCEPTED, record, spec.name)
        if spec.expires is not None:
            self._arm_expiry(record)
        if hold:
            self._set_phase(record, Phase.WAITING)
            if self.changes is not None:
                self.changes[record.task_id] = record
        else:
            self.release(record)

    def release(self, record: TaskRecord) -> None:
        """Queue an accepted task, or schedule it when its eta is in the future."""
        spec = record.spec
        if spec.eta is not None and spec.eta > self.clock.time():
            self.schedule(record, spec.eta, EventKind.SCHEDULED)
        else:
            self.enqueue(record, EventKind.QUEUED)

    def enqueue(self, record: TaskRecord, kind: EventKind, *, front: bool = False) -> None:
        """Put ``record`` in its ready queue (at the front for a redelivery)."""
        name = record.spec.queue
        self._set_phase(record, Phase.QUEUED)
        record.due = None
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queue(name)
        queue.push(record, front=front)
        self.dirty_queues.add(name)
        changes = self.changes
        if changes is not None:
            if front:
                self._seq_front -= 1
                record.seq = self._seq_front
            else:
                self._seq_back += 1
                record.seq = self._seq_back
            changes[record.task_id] = record
        if self.sink is not None:  # the common case has no sink: build no event at all
            self._emit(kind, record)

    def schedule(self, record: TaskRecord, due: float, kind: EventKind) -> None:
        """Park ``record`` in the timer heap until wall time ``due``; it takes no credit."""
        self._set_phase(record, Phase.SCHEDULED)
        record.due = due
        self.timers.schedule(self.mono_at(due), lambda: self._due(record, due))
        if self.changes is not None:
            self.changes[record.task_id] = record
        if self.sink is not None:
            self._emit(kind, record, f"due={due:.3f}")

    def lease(self, record: TaskRecord, session: Session) -> Lease:
        """Assign ``record`` (just popped from its queue) to ``session`` under a new lease."""
        record.attempts += 1
        record.worker_id = session.worker_id
        self._set_phase(record, Phase.LEASED)
        if not session.leases:
            # Idle workers are not pinged, so a quiet one is not silent: its liveness clock
            # starts when it gets work (WorkerSessions._check_liveness).
            session.last_seen = self.clock.monotonic()
        lease = self.leases.mint(record, session)
        if record.spec.time_limit_ms:
            self._arm_deadline(lease)
        if self.changes is not None:
            self.changes[record.task_id] = record
        self._emit(EventKind.LEASED, record, lease.lease_id)
        return lease

    def start(self, lease: Lease) -> None:
        """The worker began executing ``lease``'s task."""
        record = lease.record
        record.state = TaskState.STARTED
        self._note_running(record)
        self._emit(EventKind.STARTED, record, lease.lease_id)

    def update_state(self, lease: Lease, state: str, meta: Payload | None) -> None:
        """A running task set a custom state (``self.update_state``); clients can read it."""
        record = lease.record
        record.state = TaskState.STARTED
        record.custom_state = state
        record.result = meta
        self.recount(record)
        self._note_running(record)
        self._emit(EventKind.STARTED, record, state)

    def _note_running(self, record: TaskRecord) -> None:
        """Note a running task's state for other brokers to read (see the module docstring)."""
        if self.share_running and self.changes is not None:
            self.changes[record.task_id] = record

    def retry(self, lease: Lease, error: TaskError | None, due: float) -> None:
        """End an attempt that will run again at wall time ``due``."""
        record = lease.record
        self.leases.release(lease)
        record.retries += 1
        record.state = TaskState.RETRY
        record.error = error
        record.custom_state = ""
        record.result = None  # the meta of a custom state belonged to the failed attempt
        self.recount(record)
        if due <= self.clock.time():
            self.enqueue(record, EventKind.RETRIED)  # no backoff: straight back to its queue
        else:
            self.schedule(record, due, EventKind.RETRIED)

    def requeue(self, lease: Lease, *, count_attempt: bool, reason: str) -> None:
        """Put a leased task back at the front of its queue.

        Args:
            lease: The lease given up.
            count_attempt: False when the worker handed it back unstarted (drain), so the
                delivery does not count as an attempt.
            reason: Why, for the event and the log.
        """
        record = lease.record
        self.leases.release(lease)
        if count_attempt:
            record.redeliveries += 1
        else:
            record.attempts -= 1
        record.state = TaskState.RETRY if record.retries else TaskState.PENDING
        record.custom_state = ""
        record.result = None  # the meta of a custom state belonged to the lost attempt
        self.recount(record)
        self.enqueue(record, EventKind.REQUEUED, front=True)
        logger.info("task requeued id=%s reason=%s", record.task_id, reason)

    def replace(self, lease: Lease, replacement: str) -> None:
        """The leased task handed its place to task ``replacement`` (Task.replace).

        It waits, holding no lease, until the replacement finishes, then takes its outcome.
        """
        record = lease.record
        self.leases.release(lease)
        record.replaced_by = replacement
        record.custom_state = ""
        record.result = None
        self.recount(record)
        self._set_phase(record, Phase.WAITING)
        if self.changes is not None:
            self.changes[record.task_id] = record
        self._emit(EventKind.STARTED, record, f"replaced by {replacement}")
        if self.on_replaced is not None:
            self.on_replaced(record)

    def finish(
        self,
        record: TaskRecord,
        state: TaskState,
        *,
        result: Payload | None = None,
        error: TaskError | None = None,
        kind: EventKind = EventKind.FINISHED,
        dead_letter: bool = False,
    ) -> None:
        """Give ``record`` its final state, store the result and wake waiters."""
        if record.phase is Phase.QUEUED:
            self.queue(record.spec.queue).discard(record)
            if self.gates.active:
                self.gates.dropped(record)
        if record.lease_id:
            lease = self.leases.get(record.lease_id)
            if lease is not None:
                self.leases.release(lease)
        self._set_phase(record, Phase.FINISHED)
        self.unfinished -= 1
        record.state = state
        record.custom_state = ""
        if not dead_letter:
            # A finished task never runs again from these, so free the memory; a dead letter
            # keeps them because an operator may requeue it.
            record.args = None
        record.result = None if record.spec.ignore_result else result
        record.error = error
        record.date_done = self.clock.time()
        record.due = None
        self.recount(record)
        if self.changes is not None:
            self.changes[record.task_id] = record
        self._emit(kind, record, state.value)
        ttl = record.spec.result_ttl_ms / 1000 if record.spec.result_ttl_ms else self.result_ttl
        if dead_letter:
            until = self.clock.monotonic() + self.dead_letter_ttl
            self.dead_letters.add(record, record.date_done, until)
            self._emit(EventKind.DEAD_LETTERED, record)
        self.results.store(record, self.clock.monotonic(), ttl)
        if self.on_finished is not None:
            self.on_finished(record)

    def revive(self, record: TaskRecord) -> None:
        """Turn a finished (dead-lettered) task into a fresh PENDING task in its queue."""
        self.results.discard(record.task_id)
        self.dead_letters.remove(record.task_id)
        self.unfinished += 1
        record.retries = 0
        record.redeliveries = 0
        record.state = TaskState.PENDING
        record.result = None
        record.error = None
        record.progress = None
        record.date_done = None
        self.recount(record)
        self.enqueue(record, EventKind.QUEUED)

    def hand_off(self, record: TaskRecord) -> None:
        """Let go of a queued task (just drained from its queue) another broker may claim.

        Brokers sharing a database hand queued tasks they have no credit for to the shared
        pool (broker.cluster): the record leaves this broker's memory unfinished, noted as
        changed so that its row is written to the pool. Waiters stay: the task's finish,
        wherever it happens, wakes them.
        """
        del self.tasks[record.task_id]
        self.unfinished -= 1
        self._uncount(record)
        if self.gates.active:  # reopened by a gate but not taken: the gate's next goes instead
            self.gates.dropped(record)
        if self.changes is not None:
            self.changes[record.task_id] = record

    def forget(self, task_id: str) -> bool:
        """Drop a finished task's record and result now; True if there was one."""
        record = self.tasks.get(task_id)
        if record is None or not record.ready:
            return False
        self.disown(task_id)
        self._note_dropped(record)
        self._emit(EventKind.FORGOTTEN, record)
        return True

    def disown(self, task_id: str) -> bool:
        """Let go of a finished or leased task another broker took over (a shared database).

        Its row is the other broker's now (a leased one: its worker moved there): nothing is
        noted for the journal and no event is emitted. True if the task was held here.
        """
        record = self.tasks.get(task_id)
        if record is None:
            return False
        if record.phase is Phase.LEASED:
            lease = self.leases.get(record.lease_id)
            if lease is not None:
                self.leases.release(lease)
            self._set_phase(record, Phase.QUEUED)  # uncounted from the leased
            self.unfinished -= 1
        elif record.ready:
            self.results.discard(task_id)
            self.dead_letters.remove(task_id)
        else:
            return False
        del self.tasks[task_id]
        self._uncount(record)
        return True

    # -- recovery ----------------------------------------------------------------------------

    def restore(self, record: TaskRecord) -> None:
        """Take back a queued, scheduled or finished task read from the journal.

        No event is emitted and nothing is noted as changed: the journal already holds it.
        Callers restore queued tasks in their queue order (``seq``) and finished ones in the
        order they finished (the result store expires them in that order). Deadlines that
        passed while the broker was down (an eta, ``expires``, a result's TTL) are armed in
        the past, so the first timer pass applies them through the normal transitions.
        """
        self.tasks[record.task_id] = record
        self.recount(record)
        if record.phase is Phase.FINISHED:
            self._restore_finished(record)
            return
        self.unfinished += 1
        if record.spec.expires is not None:
            self._arm_expiry(record)
        self._track_seq(record.seq)
        if record.phase is Phase.WAITING:
            return  # broker.core.workflows registers it with its parents
        if record.phase is Phase.SCHEDULED and record.due is not None:
            record.phase = Phase.QUEUED  # not counted anywhere yet: _set_phase must not uncount
            self._set_phase(record, Phase.SCHEDULED)
            due = record.due
            self.timers.schedule(self.mono_at(due), lambda: self._due(record, due))
        else:
            record.phase = Phase.QUEUED
            record.due = None
            self.queue(record.spec.queue).push(record)
            self.dirty_queues.add(record.spec.queue)

    def restore_lease(self, record: TaskRecord, session: Session) -> Lease:
        """Take back a task that was leased when the broker stopped, under its old lease id.

        ``session`` is a closed stand-in for the worker that held it: the worker keeps the
        lease by reconnecting within the grace period, as after any dropped stream.
        """
        self.tasks[record.task_id] = record
        self.recount(record)
        self.unfinished += 1
        if record.spec.expires is not None:
            self._arm_expiry(record)
        self._track_seq(record.seq)
        record.phase = Phase.QUEUED
        self._set_phase(record, Phase.LEASED)
        lease = self.leases.adopt(record, session, record.lease_id)
        if record.spec.time_limit_ms:
            self._arm_deadline(lease)
        return lease

    def _restore_finished(self, record: TaskRecord) -> None:
        done = record.date_done if record.date_done is not None else self.clock.time()
        finished_at = self.mono_at(done)
        if record.dead_lettered:
            self.dead_letters.add(record, done, finished_at + self.dead_letter_ttl)
        ttl = record.spec.result_ttl_ms / 1000 if record.spec.result_ttl_ms else self.result_ttl
        self.results.store(record, finished_at, ttl)

    def _track_seq(self, seq: int) -> None:
        if seq > self._seq_back:
            self._seq_back = seq
        elif seq < self._seq_front:
            self._seq_front = seq

    # -- timer actions -----------------------------------------------------------------------

    def _arm_expiry(self, record: TaskRecord) -> None:
        assert record.spec.expires is not None
        self.timers.schedule(self.mono_at(record.spec.expires), lambda: self._expiry_due(record))

    def _arm_deadline(self, lease: Lease) -> None:
        limit = lease.record.spec.time_limit_ms / 1000
        deadline = self.clock.monotonic() + limit + self.lease_margin
        lease.deadline = self.timers.schedule(deadline, lambda: self._on_deadline(lease))

    def _due(self, record: TaskRecord, due: float) -> None:
        if record.phase is Phase.SCHEDULED and record.due == due:
            self.enqueue(record, EventKind.QUEUED)

    def _reopen(self, record: TaskRecord) -> None:
        # Back from a dispatch gate: it never left QUEUED, so nothing is journaled or emitted.
        name = record.spec.queue
        self.queue(name).push(record, front=True)
        self.dirty_queues.add(name)

    def _expiry_due(self, record: TaskRecord) -> None:
        # The record itself: a released task claimed back is a new record under the same id.
        if record.phase in _NOT_STARTED and self.tasks.get(record.task_id) is record:
            self.expire(record)

    def expire(self, record: TaskRecord) -> None:
        """Finish a task whose ``expires`` passed before it ran; it never runs.

        It ends REVOKED, as in Celery (an expired task is a revoke the producer asked for in
        advance), with error type ``TaskExpired`` saying why; not dead-lettered, since nothing
        failed.
        """
        error = TaskError("TaskExpired", f"task expired at {record.spec.expires} before it ran")
        self.finish(record, TaskState.REVOKED, error=error, kind=EventKind.EXPIRED)

    def _on_deadline(self, lease: Lease) -> None:
        """A time-limited lease outlived its limit plus margin: the worker is hung.

        The worker's own hard limit kills the task and reports a final TimeLimitExceeded, as
        Celery's does. Reaching this backstop means the worker did not even do that, and the
        broker cannot tell a hung task from a hung or cut-off worker. So it cancels the attempt
        and gives the task another chance, as a RETRY counted against ``max_retries`` (the
        client sends 3 unless told otherwise), to whichever worker has credit first. With no
        retries left, or no limit at all (``max_retries=None``), it fails for good: a task
        that may hang must not be retried forever.
        """
        lease.deadline = None
        record = lease.record
        session = lease.session
        session.outbox.cancel(lease.lease_id, terminate=True, reason="time limit exceeded")
        limit = record.spec.time_limit_ms
        error = TaskError("TimeLimitExceeded", f"hard time limit ({limit} ms) exceeded", "", True)
        logger.warning("lease deadline passed id=%s lease=%s", record.task_id, lease.lease_id)
        max_retries = record.spec.max_retries
        if max_retries is not None and record.retries < max_retries:
            self.retry(lease, error, self.clock.time())
        else:
            self.finish(record, TaskState.FAILURE, error=error, dead_letter=True)

    def _drop_finished(self, task_id: str) -> None:
        record = self.tasks.get(task_id)
        if record is not None and record.ready and not record.dead_lettered:
            del self.tasks[task_id]
            self._uncount(record)
            self._note_dropped(record)

    def _note_dropped(self, record: TaskRecord) -> None:
        if self.changes is not None:
            self.changes[record.task_id] = None
            if record.journal_row:
                self.dropped_rows.append(record.journal_row)

    def _dead_letter_expired(self, task_id: str) -> None:
        record = self.dead_letters.remove(task_id)
        if record is not None:
            record.args = None  # it can no longer be requeued
            self.recount(record)
            if self.changes is not None:
                self.changes[task_id] = record
        if not self.results.holds(task_id):
            self._drop_finished(task_id)

    # -- bookkeeping -------------------------------------------------------------------------

    def _set_phase(self, record: TaskRecord, phase: Phase) -> None:
        queue = record.spec.queue
        if record.phase is Phase.SCHEDULED:
            self._scheduled[queue] -= 1
            self.scheduled.pop(record.task_id, None)
        elif record.phase is Phase.LEASED:
            self._leased[queue] -= 1
        if phase is Phase.SCHEDULED:
            self._scheduled[queue] += 1
            self.scheduled[record.task_id] = record
        elif phase is Phase.LEASED:
            self._leased[queue] += 1
        record.phase = phase

    def _emit(self, kind: EventKind, record: TaskRecord, detail: str = "") -> None:
        if self.sink is not None:
            self.sink(TaskEvent(kind, record.task_id, self.clock.time(), detail))


# Phases of a task that has not run yet, so that its ``expires`` still applies.
_NOT_STARTED = (Phase.QUEUED, Phase.SCHEDULED, Phase.WAITING)


def _payload_size(record: TaskRecord) -> int:
    size = 0
    for payload in (record.args, record.result, record.progress):
        if payload is not None:
            size += len(payload.body)
    error = record.error
    if error is not None:
        size += len(error.message) + len(error.traceback)
    return size
