"""Worker sessions: hello, reports, liveness, stream end and reclaiming leases.

Applies what workers report (start acks, outcomes, extensions, custom states, returned leases,
credit) to the task state machine, rejecting anything that names a lease the session does not
hold. A session whose stream ends keeps its leases for a grace period so the same worker can
reclaim them after a reconnect; then they are requeued.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Callable, Sequence

from broker.core.dispatch import Dispatcher
from broker.core.leases import Lease
from broker.core.lifecycle import Lifecycle
from broker.core.model import (
    Hello,
    LeaseExtension,
    Outcome,
    Payload,
    Report,
    TaskError,
    TaskRecord,
    TaskState,
)
from broker.core.periodic import PeriodicSpec
from broker.core.sessions import Session
from broker.core.validation import QUEUE_NAME, check_name
from broker.errors import InvalidArgument, InvalidName, NotFound, SessionFenced

logger = logging.getLogger(__name__)

NOT_HELD = "lease not held: revoked, timed out, requeued or unknown"
# The error type of a task whose result is over max_payload_bytes; workers use the same name.
RESULT_TOO_LARGE = "ResultTooLarge"
OUTCOME_STATES = frozenset(
    {TaskState.SUCCESS, TaskState.FAILURE, TaskState.RETRY, TaskState.REVOKED}
)


class WorkerSessions:
    """Every worker session the broker knows, open or in its grace period."""

    def __init__(
        self,
        lifecycle: Lifecycle,
        dispatcher: Dispatcher,
        declare_periodic: Callable[[Sequence[PeriodicSpec]], None],
        *,
        ping_timeout: float,
        lease_grace: float,
        max_deliveries: int,
        max_payload_bytes: int,
    ) -> None:
        self._lifecycle = lifecycle
        self._dispatcher = dispatcher
        self._declare_periodic = declare_periodic
        self._ping_timeout = ping_timeout
        self._lease_grace = lease_grace
        self._max_deliveries = max_deliveries
        self._max_payload_bytes = max_payload_bytes
        self.sessions: dict[str, Session] = {}

    def get(self, session_id: str) -> Session:
        """The session with this id; raises NotFound when it is gone."""
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"no session {session_id}")
        return session

    def open(self, hello: Hello) -> tuple[Session, list[str]]:
        """Start a session; returns it and the held leases it kept from an earlier session."""
        check_name(hello.worker_id, "Hello.worker_id")
        for queue in hello.queues:
            if not QUEUE_NAME.fullmatch(queue):
                raise InvalidName(f"invalid queue name {queue[:140]!r} in Hello.queues")
        for name in hello.task_names:
            check_name(name, "a name in Hello.task_names")
        for name, _ in hello.rate_limits:
            check_name(name, "a task name in Hello.rate_limits")
        if hello.periodic:
            self._declare_periodic(hello.periodic)  # checks every entry before changing any
        self._fence(hello.worker_id)
        for name, per_second in hello.rate_limits:
            # The latest hello wins: a redeployed worker brings its tasks' current limits.
            self._lifecycle.gates.declare_rate(name, per_second)
        clock = self._lifecycle.clock
        session = Session(uuid.uuid4().hex, hello, clock.time(), clock.monotonic())
        kept = self._reclaim(session, hello.held_lease_ids)
        self.sessions[session.session_id] = session
        self._dispatcher.add(session)
        self._arm_liveness(session)
        logger.info(
            "worker connected worker=%s session=%s queues=%s kept=%d",
            hello.worker_id,
            session.session_id,
            ",".join(session.queues),
            len(kept),
        )
        return session, kept

    def report(self, session: Session, report: Report) -> None:
        """Apply one batched Report from ``session``."""
        _check_outcomes(report.outcomes)
        self.touch(session)
        lifecycle = self._lifecycle
        for lease_id in report.started:
            if (lease := self._held(session, lease_id)) is not None:
                lifecycle.start(lease)
        for extension in report.extensions:
            if (lease := self._held(session, extension.lease_id)) is not None:
                self._extend(lease, extension)
        for update in report.state_updates:
            if (lease := self._held(session, update.lease_id)) is not None:
                lifecycle.update_state(lease, update.state, update.meta)
        for outcome in report.outcomes:
            if (lease := self._held(session, outcome.lease_id)) is not None:
                self._apply_outcome(lease, outcome)
        for lease_id in report.returned:
            if (lease := self._held(session, lease_id)) is not None:
                lifecycle.requeue(lease, count_attempt=False, reason="returned by worker")
        if report.withdraw_credit:
            session.credit = 0
        session.credit += report.credit
        self._dispatcher.fill(session)
        # Returned leases and immediate retries went back to their queues: other sessions with
        # credit may take them now, not at the next unrelated dispatch.
        self._dispatcher.pump()

    def touch(self, session: Session) -> None:
        """The worker showed signs of life (any message counts, not only pongs)."""
        session.last_seen = self._lifecycle.clock.monotonic()

    def resized(self, session: Session, concurrency: int) -> None:
        """The worker's pool has ``concurrency`` slots now (``app.control.pool_grow``/``_shrink``).

        Only what listings, events and metrics show changes: credit is what the broker assigns by.
        """
        session.hello = dataclasses.replace(session.hello, concurrency=concurrency)

    def close(self, session: Session, reason: str) -> None:
        """The stream ended: stop assigning, and requeue its leases after the grace period."""
        if session.closed:
            return
        session.closed = True
        self._dispatcher.remove(session)
        if session.liveness_timer is not None:
            session.liveness_timer.cancel()
        logger.info(
            "worker disconnected worker=%s session=%s reason=%s leases=%d",
            session.worker_id,
            session.session_id,
            reason,
            len(session.leases),
        )
        deadline = self._lifecycle.clock.monotonic() + self._lease_grace
        session.grace_timer = self._lifecycle.timers.schedule(
            deadline, lambda: self._release(session)
        )

    def drain(self, reason: str) -> None:
        """Tell every open session to stop taking work and hand back what it has not started."""
        for session in self.sessions.values():
            if not session.closed and not session.draining:
                session.draining = True
                session.outbox.drain = reason

    def restore_leases(self, records: list[TaskRecord]) -> None:
        """Take back tasks that were leased when the broker stopped (journal recovery).

        Each worker that held some gets a closed stand-in session, exactly as if its stream had
        just ended: a worker that reconnects within the lease grace and names its leases in
        ``held_lease_ids`` keeps them; otherwise they are requeued with the redelivery counted.
        """
        stand_ins: dict[str, Session] = {}
        clock = self._lifecycle.clock
        for record in records:
            session = stand_ins.get(record.worker_id)
            if session is None:
                hello = Hello(worker_id=record.worker_id)
                session = Session(uuid.uuid4().hex, hello, clock.time(), clock.monotonic())
                session.closed = True
                stand_ins[record.worker_id] = session
                self.sessions[session.session_id] = session
            self._lifecycle.restore_lease(record, session)
        deadline = clock.monotonic() + self._lease_grace
        for session in stand_ins.values():
            session.grace_timer = self._lifecycle.timers.schedule(
                deadline, functools.partial(self._release, session)
            )
            logger.info(
                "restored %d leases of worker=%s; requeued unless it reconnects within %g s",
                len(session.leases),
                session.worker_id,
                self._lease_grace,
            )

    # -- internals ---------------------------------------------------------------------------

    def _fence(self, worker_id: str) -> None:
        """End the open sessions of ``worker_id``: the newest session of a worker id wins.

        A worker that reconnects after a broken stream may arrive before the broker noticed
        the old stream is dead; refusing it would stall the worker for up to a ping timeout.
        The old session is closed like a lost one: its stream ends, reports on it are rejected,
        and the new session reclaims the leases its Hello names (the rest are requeued after
        the grace period). Only worker-role tokens may open sessions (broker.service.auth).
        """
        for session in list(self.sessions.values()):
            if session.worker_id == worker_id and not session.closed:
                session.outbox.drop = SessionFenced(
                    f"worker id {worker_id!r} opened a newer session; this one is fenced off "
                    "(two workers must not share a --hostname)"
                )
                self.close(session, "fenced by a newer session of the same worker id")

    def _held(self, session: Session, lease_id: str) -> Lease | None:
        lease = self._lifecycle.leases.get(lease_id)
        if lease is None or lease.session is not session:
            session.outbox.rejections.append((lease_id, NOT_HELD))
            return None
        return lease

    def _reclaim(self, session: Session, held: tuple[str, ...]) -> list[str]:
        kept: list[str] = []
        for lease_id in held:
            lease = self._lifecycle.leases.get(lease_id)
            if lease is not None and lease.session.worker_id == session.worker_id:
                self._lifecycle.leases.move(lease, session)
                kept.append(lease_id)
        return kept

    def _extend(self, lease: Lease, extension: LeaseExtension) -> None:
        if extension.progress is not None:
            lease.record.progress = extension.progress
            self._lifecycle.recount(lease.record)
        if lease.deadline is not None and extension.extend_ms:
            wanted = self._lifecycle.clock.monotonic() + extension.extend_ms / 1000
            if wanted > lease.deadline.deadline:
                action = lease.deadline.action
                lease.deadline.cancel()
                lease.deadline = self._lifecycle.timers.schedule(wanted, action)

    def _apply_outcome(self, lease: Lease, outcome: Outcome) -> None:
        lifecycle = self._lifecycle
        record = lease.record
        if outcome.replaced_by and outcome.state is TaskState.SUCCESS:
            lifecycle.replace(lease, outcome.replaced_by)
        elif outcome.state is TaskState.SUCCESS:
            if (oversize := self._oversize(outcome.result)) is not None:
                lifecycle.finish(record, TaskState.FAILURE, error=oversize, dead_letter=True)
            else:
                lifecycle.finish(record, TaskState.SUCCESS, result=outcome.result)
        elif outcome.state is TaskState.FAILURE:
            error = outcome.error or TaskError("UnknownError", "the worker gave no error")
            lifecycle.finish(record, TaskState.FAILURE, error=error, dead_letter=True)
        elif outcome.state is TaskState.REVOKED:
            error = outcome.error or TaskError("TaskRevoked", "revoked while running")
            lifecycle.finish(record, TaskState.REVOKED, error=error)
        else:
            spec_limit = record.spec.max_retries
            limit = outcome.max_retries if spec_limit is None else spec_limit
            if limit is not None and record.retries + 1 > limit:
                lifecycle.finish(record, TaskState.FAILURE, error=outcome.error, dead_letter=True)
                return
            now = lifecycle.clock.time()
            due = outcome.retry_eta or now + outcome.retry_countdown_ms / 1000
            lifecycle.retry(lease, outcome.error, max(due, now))

    def _oversize(self, result: Payload | None) -> TaskError | None:
        """The error for a result over the payload limit (a worker should have caught it)."""
        if result is None or len(result.body) <= self._max_payload_bytes:
            return None
        return TaskError(
            RESULT_TOO_LARGE,
            f"the result is {len(result.body):,} bytes, over the broker's limit of "
            f"{self._max_payload_bytes:,} (max_payload_bytes)",
        )

    def _arm_liveness(self, session: Session) -> None:
        # An idle session is looked at again a ping timeout from now, when it may hold work.
        start = session.last_seen if session.leases else self._lifecycle.clock.monotonic()
        deadline = start + self._ping_timeout
        session.liveness_timer = self._lifecycle.timers.schedule(
            deadline, lambda: self._check_liveness(session)
        )

    def _check_liveness(self, session: Session) -> None:
        """Drop a worker that holds tasks and has sent nothing for a whole ping timeout.

        Only workers holding tasks are pinged (the service's pinger), so only they are judged
        by silence; a dead idle worker is noticed by gRPC's keepalive on its connection.
        """
        if session.closed:
            return
        silent = self._lifecycle.clock.monotonic() - session.last_seen
        if session.leases and silent >= self._ping_timeout:
            session.outbox.drop = f"no message for {self._ping_timeout:g} s"
            self.close(session, "ping timeout")
        else:
            self._arm_liveness(session)

    def _release(self, session: Session) -> None:
        """The grace period ended: requeue what the worker did not reclaim, forget the session."""
        self.sessions.pop(session.session_id, None)
        lifecycle = self._lifecycle
        for lease in list(session.leases.values()):
            record = lease.record
            if record.redeliveries + 1 >= self._max_deliveries:
                error = TaskError(
                    "WorkerLost",
                    f"the worker running this task was lost {record.redeliveries + 1} times; "
                    "giving up (poison task?)",
                )
                lifecycle.finish(record, TaskState.FAILURE, error=error, dead_letter=True)
            else:
                lifecycle.requeue(lease, count_attempt=True, reason="worker lost")


def _check_outcomes(outcomes: tuple[Outcome, ...]) -> None:
    """Refuse the whole report before applying any of it when an outcome is malformed."""
    for index, outcome in enumerate(outcomes):
        if outcome.state not in OUTCOME_STATES:
            raise InvalidArgument(
                f"outcomes[{index}].state {outcome.state.value} is not SUCCESS, FAILURE, "
                "RETRY or REVOKED"
            )
