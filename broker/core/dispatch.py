"""Dispatch by credit: ready tasks go to sessions that have asked for work.

Invariants kept after every :meth:`Dispatcher.pump`:

* no session is ever assigned more tasks than the credit it granted;
* no session with credit coexists with a ready task in a queue it consumes;
* sessions consuming the same queue take turns (round-robin);
* a session consuming several queues fills its credit from them in the order it listed them.

Expired tasks met at the head of a queue are finished (TaskExpired) instead of being assigned;
tasks a rate or concurrency limit holds back are parked on its gate (broker.core.gates).
"""

from __future__ import annotations

from broker.core.lifecycle import Lifecycle
from broker.core.model import Assignment, TaskRecord
from broker.core.sessions import Session


class Dispatcher:
    """Connected sessions by queue, and the matching of ready tasks to credit."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle
        self._consumers: dict[str, list[Session]] = {}
        self._cursor: dict[str, int] = {}

    def add(self, session: Session) -> None:
        """Start dispatching to ``session``'s queues."""
        for queue in session.queues:
            self._consumers.setdefault(queue, []).append(session)
            self._lifecycle.queue(queue)  # a consumed queue is listed even while empty

    def remove(self, session: Session) -> None:
        """Stop dispatching to ``session``."""
        for queue in session.queues:
            consumers = self._consumers.get(queue, [])
            if session in consumers:
                consumers.remove(session)

    def consumer_count(self, queue: str) -> int:
        """Sessions currently consuming ``queue``."""
        return len(self._consumers.get(queue, ()))

    def pump(self) -> None:
        """Assign ready tasks of every queue that changed to sessions with credit."""
        lifecycle = self._lifecycle
        while lifecycle.dirty_queues:
            queue = lifecycle.dirty_queues.pop()
            self._drain_queue(queue)

    def fill(self, session: Session) -> None:
        """Use ``session``'s credit on its queues, in the order it listed them."""
        for queue in session.queues:
            while session.can_take_work:
                record = self._next_ready(queue)
                if record is None:
                    break
                self._assign(record, session)

    def _drain_queue(self, queue: str) -> None:
        consumers = self._consumers.get(queue)
        if not consumers:
            return
        ready = self._lifecycle.queue(queue)
        while len(ready):
            session = self._next_consumer(queue, consumers)
            if session is None:
                return
            record = self._next_ready(queue)
            if record is None:
                return
            self._assign(record, session)

    def _next_consumer(self, queue: str, consumers: list[Session]) -> Session | None:
        count = len(consumers)
        start = self._cursor.get(queue, 0)
        for offset in range(count):
            index = (start + offset) % count
            if consumers[index].can_take_work:
                self._cursor[queue] = index + 1
                return consumers[index]
        return None

    def _next_ready(self, queue: str) -> TaskRecord | None:
        lifecycle = self._lifecycle
        ready = lifecycle.queues.get(queue)
        now = lifecycle.clock.time()
        while ready is not None and len(ready):
            record = ready.pop()
            if record is None:
                return None
            expires = record.spec.expires
            if expires is not None and expires <= now:
                lifecycle.expire(record)
                continue
            if lifecycle.gates.active and not lifecycle.gates.admit(record):
                continue  # parked on a rate or concurrency gate until it opens
            return record
        return None

    def _assign(self, record: TaskRecord, session: Session) -> None:
        lease = self._lifecycle.lease(record, session)
        session.credit -= 1
        session.outbox.assignments.append(Assignment(lease.lease_id, lease.attempt, record))
