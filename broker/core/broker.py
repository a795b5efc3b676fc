"""The :class:`Broker` facade: the one object every adapter (gRPC service, tests) talks to.

Each public method is one core operation. It validates, applies transitions through the
:class:`~broker.core.lifecycle.Lifecycle`, then dispatches ready tasks to credit; what sessions
must receive accumulates in their outboxes, which the service flushes at the end of the loop turn
(or at once, see broker.service.runtime).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence

from broker.clock import Clock, SystemClock
from broker.config import BrokerConfig
from broker.core.dedup import IdempotencyKeys
from broker.core.dispatch import Dispatcher
from broker.core.events import EventKind, EventSink
from broker.core.ids import TaskIds
from broker.core.lifecycle import Lifecycle
from broker.core.model import (
    DependencyMode,
    Phase,
    QueueStats,
    RateLimit,
    RevokeOutcome,
    SubmitResult,
    TaskError,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from broker.core.periodic import Periodic, PeriodicSpec
from broker.core.results import Waiter
from broker.core.sessions import Outbox, Session
from broker.core.validation import Limits, check_name, payload_bytes, validate_spec
from broker.core.workers import WorkerSessions
from broker.core.workflows import Workflows
from broker.errors import (
    BrokerError,
    HeldBytesExceeded,
    InvalidArgument,
    QueueFull,
    QueuesExceeded,
)

logger = logging.getLogger(__name__)

DEFAULT_DEAD_LETTER_LIMIT = 100
# Below this many known queues no sweep is worth its cost.
_QUEUE_SWEEP_MIN = 1024


class Broker:
    """Queues, leases, results and dead letters of one broker, driven by an injected clock.

    Args:
        config: Limits and timings.
        clock: Time source; the system clock when omitted.
        sink: Optional receiver of every task event (for a journal or an events stream).
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        clock: Clock | None = None,
        sink: EventSink | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self.clock: Clock = clock or SystemClock()
        cfg = self.config
        self.lifecycle = Lifecycle(
            self.clock,
            result_ttl=cfg.result_ttl,
            max_results=cfg.max_results,
            dead_letter_ttl=cfg.dead_letter_ttl,
            max_dead_letters=cfg.max_dead_letters,
            lease_margin=cfg.lease_margin,
            sink=sink,
        )
        self._dispatcher = Dispatcher(self.lifecycle)
        self.periodic = Periodic(
            self.clock, self.lifecycle.timers, self.submit, self.lifecycle.note_periodic
        )
        self.workers = WorkerSessions(
            self.lifecycle,
            self._dispatcher,
            self.declare_periodic,
            ping_timeout=cfg.ping_timeout,
            lease_grace=cfg.lease_grace,
            max_deliveries=cfg.max_deliveries,
            max_payload_bytes=cfg.max_payload_bytes,
        )
        self._keys = IdempotencyKeys(self.lifecycle.timers)
        self.workflows = Workflows(
            self.lifecycle,
            max_dependencies=cfg.max_dependencies,
            max_depth=cfg.max_workflow_depth,
        )
        self._task_ids = TaskIds()
        self._limits = Limits(
            max_payload_bytes=cfg.max_payload_bytes, accept_content=cfg.accepted_content_types()
        )
        # Idle queues are swept when the count of known queues doubles (amortised O(1) per
        # submit), so memory follows the queues in use, not every name ever seen.
        self._sweep_queues_at = _QUEUE_SWEEP_MIN
        # Queued tasks of a shared pool by queue (brokers sharing a database; see
        # set_pool_depths): counted in queue depths and against max_queued.
        self._pool_depths: dict[str, int] = {}
        self._pooled = 0

    # -- producers ---------------------------------------------------------------------------

    def submit(self, spec: TaskSpec) -> SubmitResult:
        """Accept one task (or return the existing one for a known id or idempotency key)."""
        validate_spec(spec, self._limits)
        existing = self._existing(spec)
        if existing is not None:
            return existing
        if _in_workflow(spec):
            self.workflows.check((spec,), self.lifecycle.tasks)
        self._check_capacity(1, payload_bytes(spec))
        if spec.queue not in self.lifecycle.queues:
            self._open_queues({spec.queue})
        result = self._accept(spec)
        self._dispatcher.pump()
        self._sweep_idle_queues()
        return result

    def submit_many(self, specs: Sequence[TaskSpec]) -> list[SubmitResult]:
        """Accept a batch, all or nothing: an invalid spec rejects the whole batch.

        Raises:
            InvalidArgument: The batch is too large, or spec number ``i`` is invalid (the
                message starts with ``tasks[i]``).
        """
        if len(specs) > self.config.max_batch:
            raise InvalidArgument(
                f"batch of {len(specs)} tasks exceeds the limit of {self.config.max_batch}"
            )
        for index, spec in enumerate(specs):
            try:
                validate_spec(spec, self._limits)
            except BrokerError as error:
                raise error.prefixed(f"tasks[{index}]: ") from None
        if any(_in_workflow(spec) for spec in specs):
            self.workflows.check(specs, self.lifecycle.tasks)
        self._check_capacity(len(specs), sum(payload_bytes(spec) for spec in specs))
        known = self.lifecycle.queues
        new_queues = {spec.queue for spec in specs if spec.queue not in known}
        if new_queues:
            self._open_queues(new_queues)
        results = []
        for spec in specs:
            # Only a spec naming its id or an idempotency key can match a known task.
            existing = self._existing(spec) if spec.task_id or spec.idempotency_key else None
            results.append(existing or self._accept(spec))
        self._dispatcher.pump()
        self._sweep_idle_queues()
        return results

    def known(self, spec: TaskSpec) -> SubmitResult | None:
        """The answer for a task this broker holds by ``spec``'s id or idempotency key, if any."""
        return self._existing(spec)

    def new_task_id(self) -> str:
        """A fresh task id, as a submit without one gets."""
        return self._task_ids.new()

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id``, or None when the broker does not know it."""
        return self.lifecycle.tasks.get(task_id)

    def wait(
        self,
        task_ids: Sequence[str],
        callback: Callable[[], None],
        elsewhere: Collection[str] = (),
    ) -> Waiter | None:
        """Call ``callback`` once every known unfinished task in ``task_ids`` has finished.

        Args:
            task_ids: The tasks.
            callback: Run once, when the last of them finishes.
            elsewhere: Ids of unfinished tasks another broker holds (a shared database):
                waited for too; their finish arrives as a restored finished record.

        Returns:
            The waiter (cancel it when the caller goes away), or None when nothing is left to
            wait for; the callback is then not called.
        """
        tasks = self.lifecycle.tasks
        pending = {i for i in task_ids if (r := tasks.get(i)) is not None and not r.ready}
        pending.update(i for i in elsewhere if i not in tasks)
        if not pending:
            return None
        return self.lifecycle.results.wait(pending, callback)

    def revoke(
        self, task_ids: Sequence[str], *, terminate: bool, reason: str
    ) -> list[RevokeOutcome]:
        """Revoke tasks; a queued or scheduled one never runs, a running one is cancelled."""
        outcomes = [self._revoke_one(task_id, terminate, reason) for task_id in task_ids]
        self._dispatcher.pump()
        return outcomes

    def forget(self, task_ids: Sequence[str]) -> int:
        """Drop the stored results of finished tasks now; returns how many were dropped."""
        return sum(1 for task_id in set(task_ids) if self.lifecycle.forget(task_id))

    def declare_periodic(self, specs: Sequence[PeriodicSpec]) -> None:
        """Upsert periodic entries by name, all or none (see broker.core.periodic).

        Raises:
            InvalidArgument: An entry's name, schedule or task template is invalid; the message
                names the entry.
        """
        for spec in specs:
            check_name(spec.name, "PeriodicTask.name")
            spec.check()
            try:
                validate_spec(spec.template, self._limits)
            except BrokerError as error:
                raise error.prefixed(f"periodic task {spec.name[:140]!r}: ") from None
        for spec in specs:
            self.periodic.upsert(spec)

    def set_rate_limit(self, task_name: str, per_second: float | None) -> RateLimit:
        """An operator's override of a task's global rate limit (None: drop the override).

        The override wins over the rates workers declare in their hellos until it is reset,
        and is journaled, so it holds across restarts.

        Raises:
            InvalidArgument: The name is malformed, or the rate is negative or not finite.
        """
        check_name(task_name, "SetRateLimitRequest.task_name")
        if per_second is not None and not (math.isfinite(per_second) and per_second >= 0):
            raise InvalidArgument(f"a rate limit is tasks per second >= 0, got {per_second}")
        self.restore_rate_limit(task_name, per_second)
        self.lifecycle.note_rate_override(task_name, per_second)
        self._dispatcher.pump()  # a raised or lifted limit releases parked tasks now
        return self.rate_limit(task_name)

    def rate_limit(self, task_name: str) -> RateLimit:
        """Task ``task_name``'s global rate limit as it stands."""
        gates = self.lifecycle.gates
        return RateLimit(
            gates.rate_of(task_name),
            gates.declared_rates.get(task_name, 0.0),
            task_name in gates.rate_overrides,
        )

    def restore_rate_limit(self, task_name: str, per_second: float | None) -> None:
        """Apply a rate override as the journal recorded it (nothing is noted)."""
        self.lifecycle.gates.override_rate(task_name, per_second)

    # -- recovery ----------------------------------------------------------------------------

    def restore(
        self, records: Iterable[TaskRecord], keys: Iterable[tuple[str, str, float]]
    ) -> None:
        """Rebuild the broker from a journal's rows, before it serves anyone.

        Args:
            records: Every task the journal holds, rebuilt as of the moment it was written.
            keys: Idempotency keys as (key, task id, wall time the window closes).
        """
        scheduled: list[TaskRecord] = []
        queued: list[TaskRecord] = []
        finished: list[TaskRecord] = []
        leased: list[TaskRecord] = []
        lifecycle = self.lifecycle
        for record in records:
            if record.phase is Phase.FINISHED:
                finished.append(record)
            elif record.phase is Phase.LEASED:
                leased.append(record)
            elif record.phase is Phase.SCHEDULED:
                scheduled.append(record)
                lifecycle.restore(record)
            else:
                queued.append(record)
        queued.sort(key=lambda record: record.seq)
        for record in queued:
            lifecycle.restore(record)
        finished.sort(key=lambda record: record.date_done or 0.0)
        for record in finished:
            lifecycle.restore(record)
        self.workers.restore_leases(leased)
        # Only these records: a broker sharing a database restores more as it claims and reads.
        self.workflows.restore([*scheduled, *queued, *finished, *leased])
        for key, task_id, until in keys:
            if task_id in lifecycle.tasks:
                self._keys.remember(key, task_id, lifecycle.mono_at(until))

    def idempotency_until(self, spec: TaskSpec) -> float:
        """The wall time a key submitted now stops deduplicating (for the journal)."""
        window = spec.idempotency_window_ms / 1000 or self.config.idempotency_window
        return self.clock.time() + window

    # -- time --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Monotonic time of the next timer, for the service's single loop timer."""
        return self.lifecycle.timers.next_deadline()

    def fire_timers(self) -> int:
        """Run every timer that is due, then dispatch; returns how many ran."""
        fired = self.lifecycle.timers.fire_due(self.clock.monotonic())
        self._dispatcher.pump()
        return fired

    # -- sessions ----------------------------------------------------------------------------

    def take_outboxes(self, acks_due: bool = False) -> list[tuple[Session, Outbox]]:
        """Collect what every session must be sent now (one batch per session).

        Args:
            acks_due: Also take outboxes that hold nothing but outcome acks.
        """
        ready = []
        for session in self.workers.sessions.values():
            if session.outbox or (acks_due and session.outbox.outcome_acks):
                outbox = session.take_outbox()
                if not session.closed or outbox.drop:
                    ready.append((session, outbox))
        return ready

    def idle_credit(self) -> dict[str, int]:
        """Credit open sessions hold and no ready task uses, by queue they consume.

        A session consuming several queues counts in each (a claim may then take more than
        fits; what stays queued goes back to the shared pool). Tasks parked on a rate or
        concurrency gate count as using it: otherwise a broker would claim every limited task
        of the pool for credit they never take, leaving other brokers' workers none.
        """
        idle: dict[str, int] = {}
        for session in self.workers.sessions.values():
            if session.can_take_work:
                for queue in session.queues:
                    idle[queue] = idle.get(queue, 0) + session.credit
        if self.lifecycle.gates.active:
            for queue, parked in self.lifecycle.gates.parked_by_queue().items():
                if queue in idle:
                    idle[queue] -= parked
            idle = {queue: credit for queue, credit in idle.items() if credit > 0}
        return idle

    def dispatch(self) -> None:
        """Assign whatever became ready; adapters call it after session operations."""
        self._dispatcher.pump()

    # -- admin -------------------------------------------------------------------------------

    def queue_stats(self) -> list[QueueStats]:
        """Depths of every known queue, by name."""
        lc = self.lifecycle
        parked = lc.gates.parked_by_queue() if lc.gates.active else Counter[str]()
        pool = self._pool_depths
        return [
            QueueStats(
                name,
                (len(lc.queues[name]) if name in lc.queues else 0)
                + parked[name]
                + pool.get(name, 0),
                lc.scheduled_in(name),
                lc.leased_in(name),
                self._dispatcher.consumer_count(name),
            )
            for name in sorted(lc.queue_names() | pool.keys())
        ]

    def set_pool_depths(self, depths: dict[str, int]) -> None:
        """The queued tasks of the shared pool, by queue, as last counted (broker.cluster).

        They count in :meth:`queue_stats` and against ``max_queued`` until the next count, so
        both are as fresh as that count, not exact to the task.
        """
        self._pool_depths = depths
        self._pooled = sum(depths.values())

    def scheduled(self, limit: int) -> tuple[list[TaskRecord], int]:
        """Up to ``limit`` tasks waiting for their due time, soonest first, and how many wait."""
        waiting = self.lifecycle.scheduled
        soonest = heapq.nsmallest(limit, waiting.values(), key=lambda record: record.due or 0.0)
        return soonest, len(waiting)

    def open_sessions(self) -> list[Session]:
        """Sessions whose stream is open."""
        return [s for s in self.workers.sessions.values() if not s.closed]

    def dead_letters(
        self, queue: str = "", limit: int = 0
    ) -> tuple[list[tuple[TaskRecord, float]], int]:
        """Dead letters oldest first (at most ``limit``, default 100) and the matching total."""
        limit = limit or DEFAULT_DEAD_LETTER_LIMIT
        matching = list(self.lifecycle.dead_letters.select(queue))
        return matching[:limit], len(matching)

    def requeue_dead_letters(self, task_ids: Sequence[str], *, all: bool, queue: str) -> int:
        """Put dead letters back in their queues as fresh tasks; returns how many."""
        records = self._select_dead(task_ids, all=all, queue=queue)
        self._check_capacity(len(records), 0)  # a dead letter's arguments are held already
        for record in records:
            self.lifecycle.revive(record)
        self._dispatcher.pump()
        return len(records)

    def purge_dead_letters(self, task_ids: Sequence[str], *, all: bool, queue: str) -> int:
        """Drop dead letters (and their stored results); returns how many."""
        records = self._select_dead(task_ids, all=all, queue=queue)
        for record in records:
            self.lifecycle.forget(record.task_id)
        return len(records)

    def purge_queue(self, queue: str) -> int:
        """Revoke every ready task of ``queue`` (reason "purged"); returns how many."""
        ready = self.lifecycle.queues.get(queue)
        if ready is None:
            return 0
        error = TaskError("TaskRevoked", "purged")
        records = ready.drain() + self.lifecycle.gates.drain(queue)
        for record in records:
            self.lifecycle.finish(record, TaskState.REVOKED, error=error, kind=EventKind.REVOKED)
        return len(records)

    # -- internals ---------------------------------------------------------------------------

    def _sweep_idle_queues(self) -> None:
        queues = self.lifecycle.queues
        if len(queues) < self._sweep_queues_at:
            return
        consumed = self._dispatcher.consumer_count
        dropped = self.lifecycle.release_idle_queues(lambda name: consumed(name) > 0)
        logger.debug("released %d idle queues, %d left", dropped, len(queues))
        self._sweep_queues_at = max(_QUEUE_SWEEP_MIN, 2 * len(queues))

    def _existing(self, spec: TaskSpec) -> SubmitResult | None:
        tasks = self.lifecycle.tasks
        record = tasks.get(spec.task_id) if spec.task_id else None
        if record is None and spec.idempotency_key:
            known = self._keys.lookup(spec.idempotency_key)
            record = tasks.get(known) if known else None
        if record is None:
            return None
        return SubmitResult(record.task_id, False, record.state)

    def _open_queues(self, names: set[str]) -> None:
        """Create the queues ``names`` (all unknown) unless that would pass ``max_queues``.

        Created at submit, even for a task that waits for its eta, so that the limit counts
        every name a task holds.
        """
        queues = self.lifecycle.queues
        limit = self.config.max_queues
        if len(queues) + len(names) > limit:
            consumed = self._dispatcher.consumer_count
            self.lifecycle.release_idle_queues(lambda name: consumed(name) > 0)
            if len(queues) + len(names) > limit:
                raise QueuesExceeded(
                    f"too many queues: the broker knows {len(queues)} queues with tasks or "
                    f"consumers and this would add {len(names)} (max_queues={limit})",
                    limit="max_queues",
                    max=limit,
                    value=len(queues) + len(names),
                )
        for name in names:
            self.lifecycle.queue(name)

    def _check_capacity(self, count: int, size: int) -> None:
        held = self.lifecycle.held_bytes
        if held + size > self.config.max_held_bytes and size:
            raise HeldBytesExceeded(
                f"broker full: it holds {held} bytes of arguments and results, and "
                f"{size} more would pass max_held_bytes={self.config.max_held_bytes} (retry "
                "once results are read and forgotten or expire)",
                limit="max_held_bytes",
                max=self.config.max_held_bytes,
                value=held + size,
            )
        unfinished = self.lifecycle.unfinished + self._pooled
        if unfinished + count > self.config.max_queued:
            pooled = f" and the shared pool {self._pooled} more" if self._pooled else ""
            raise QueueFull(
                f"queue full: the broker holds {self.lifecycle.unfinished} unfinished tasks"
                f"{pooled} (max_queued={self.config.max_queued})",
                limit="max_queued",
                max=self.config.max_queued,
                value=unfinished,
            )

    def _accept(self, spec: TaskSpec) -> SubmitResult:
        record = TaskRecord(spec.task_id or self._task_ids.new(), spec)
        if spec.idempotency_key:
            window = spec.idempotency_window_ms / 1000 or self.config.idempotency_window
            until = self.clock.monotonic() + window
            self._keys.remember(spec.idempotency_key, record.task_id, until)
        if spec.depends_on:
            self.workflows.accept(record)
        else:
            self.lifecycle.accept(record)
        return SubmitResult(record.task_id, True, record.state)

    def _revoke_one(self, task_id: str, terminate: bool, reason: str) -> RevokeOutcome:
        record = self.lifecycle.tasks.get(task_id)
        if record is None:
            return RevokeOutcome.UNKNOWN
        if record.ready:
            return RevokeOutcome.ALREADY_FINISHED
        error = TaskError("TaskRevoked", reason or "revoked")
        lease = self.lifecycle.leases.get(record.lease_id) if record.lease_id else None
        self.lifecycle.finish(record, TaskState.REVOKED, error=error, kind=EventKind.REVOKED)
        if lease is None:
            return RevokeOutcome.REVOKED
        # The worker learns through a Cancel; its late report on the lease is rejected.
        lease.session.outbox.cancel(lease.lease_id, terminate, reason)
        return RevokeOutcome.CANCEL_SENT

    def _select_dead(self, task_ids: Sequence[str], *, all: bool, queue: str) -> list[TaskRecord]:
        if all:
            return [record for record, _ in self.lifecycle.dead_letters.select(queue)]
        tasks = self.lifecycle.tasks
        dead = self.lifecycle.dead_letters
        return [tasks[i] for i in dict.fromkeys(task_ids) if i in dead and i in tasks]


def _in_workflow(spec: TaskSpec) -> bool:
    """Whether ``spec`` says anything about dependencies (the common task does not)."""
    return bool(spec.depends_on) or spec.dependency_mode is not DependencyMode.RESULT
