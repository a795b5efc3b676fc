"""Ready queues: per named queue, ten priority lanes of FIFO deques.

Priority 9 runs first, 0 last; FIFO within a priority. Push and pop are O(1). Removing a task
from the middle (revoke, expiry, purge) is lazy: the record stays in its deque and is skipped
when it reaches the front, while the depth count drops at once.

A lane holds the records themselves, not (ticket, record) pairs: at a million queued tasks the
pairs were ~84 bytes and one more object for the collector to track per task. Instead each
record says whether its entry is live or stale (:data:`NOT_QUEUED`, :data:`LIVE`, :data:`STALE`
in ``TaskRecord.queue_entry``). A record is in at most one deque entry at a time, so the flag
tells the one entry's state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from broker.core.model import TaskRecord

PRIORITIES = 10

# TaskRecord.queue_entry: no deque holds the record / one entry, live / one entry, removed.
NOT_QUEUED = 0
LIVE = 1
STALE = 2


class ReadyQueue:
    """One named queue of tasks waiting for a worker with credit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lanes: list[deque[TaskRecord]] = [deque() for _ in range(PRIORITIES)]
        self._depth = 0

    def __len__(self) -> int:
        return self._depth

    def push(self, record: TaskRecord, *, front: bool = False) -> None:
        """Add a task at the back of its priority lane (or the front, for a redelivery)."""
        lane = self._lanes[record.spec.priority]
        if record.queue_entry == STALE:
            # Its old entry would come back to life. No flow of the broker queues again a task
            # removed while queued (revoked, expired and purged tasks stay finished), so this
            # linear search is a guard, not a path.
            _remove_entry(lane, record)
        record.queue_entry = LIVE
        if front:
            lane.appendleft(record)
        else:
            lane.append(record)
        self._depth += 1

    def pop(self) -> TaskRecord | None:
        """Remove and return the most urgent live task, or None when the queue is empty."""
        if not self._depth:
            return None
        for lane in reversed(self._lanes):
            while lane:
                record = lane.popleft()
                live = record.queue_entry == LIVE
                record.queue_entry = NOT_QUEUED
                if live:
                    self._depth -= 1
                    return record
        return None  # pragma: no cover - the depth count guarantees a live entry

    def discard(self, record: TaskRecord) -> None:
        """Forget a queued task without searching for it (its entry is skipped later)."""
        if record.queue_entry == LIVE:
            record.queue_entry = STALE
            self._depth -= 1

    def drain(self) -> list[TaskRecord]:
        """Remove and return every live task, most urgent first."""
        live = list(self)
        self.release()
        return live

    def release(self) -> None:
        """Empty every lane, live and stale entries alike; the queue is about to be dropped."""
        for lane in self._lanes:
            for record in lane:
                record.queue_entry = NOT_QUEUED
            lane.clear()
        self._depth = 0

    def __iter__(self) -> Iterator[TaskRecord]:
        for lane in reversed(self._lanes):
            for record in lane:
                if record.queue_entry == LIVE:
                    yield record


def _remove_entry(lane: deque[TaskRecord], record: TaskRecord) -> None:
    for index, queued in enumerate(lane):
        if queued is record:
            del lane[index]
            return
