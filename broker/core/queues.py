"""Ready queues: per named queue, ten priority lanes of FIFO deques.

Priority 9 runs first, 0 last; FIFO within a priority. Push and pop are O(1). Removing a task
from the middle (revoke, expiry, purge) is lazy: the entry stays in its deque and is skipped when
it reaches the front, while the depth count drops at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from broker.core.model import Phase, TaskRecord

PRIORITIES = 10

# A deque entry: the enqueue ticket and the record. The ticket tells a live entry from a stale
# one left behind by a lazy removal, even when the same record is queued again later.
_Entry = tuple[int, TaskRecord]


class ReadyQueue:
    """One named queue of tasks waiting for a worker with credit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lanes: list[deque[_Entry]] = [deque() for _ in range(PRIORITIES)]
        self._depth = 0
        self._tickets = 0

    def __len__(self) -> int:
        return self._depth

    def push(self, record: TaskRecord, *, front: bool = False) -> None:
        """Add a task at the back of its priority lane (or the front, for a redelivery)."""
        self._tickets += 1
        record.queue_seq = self._tickets
        lane = self._lanes[record.spec.priority]
        if front:
            lane.appendleft((self._tickets, record))
        else:
            lane.append((self._tickets, record))
        self._depth += 1

    def pop(self) -> TaskRecord | None:
        """Remove and return the most urgent live task, or None when the queue is empty."""
        if not self._depth:
            return None
        for lane in reversed(self._lanes):
            while lane:
                ticket, record = lane.popleft()
                if _is_live(ticket, record):
                    self._depth -= 1
                    record.queue_seq = 0
                    return record
        return None  # pragma: no cover - the depth count guarantees a live entry

    def discard(self, record: TaskRecord) -> None:
        """Forget a queued task without searching for it (its entry is skipped later)."""
        if record.queue_seq:
            record.queue_seq = 0
            self._depth -= 1

    def drain(self) -> list[TaskRecord]:
        """Remove and return every live task, most urgent first."""
        live = list(self)
        for lane in self._lanes:
            lane.clear()
        for record in live:
            record.queue_seq = 0
        self._depth = 0
        return live

    def __iter__(self) -> Iterator[TaskRecord]:
        for lane in reversed(self._lanes):
            for ticket, record in lane:
                if _is_live(ticket, record):
                    yield record


def _is_live(ticket: int, record: TaskRecord) -> bool:
    return record.phase is Phase.QUEUED and record.queue_seq == ticket
