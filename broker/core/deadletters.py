"""Dead letters: tasks that failed for good, kept with their error for an operator to inspect.

A dead letter is a reference to a finished FAILURE record plus the time it died. It is kept for
the dead-letter TTL (independently of the result TTL), then dropped; when more than
``max_entries`` are held, the oldest is dropped early and a WARNING is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from broker.core.model import TaskRecord
from broker.core.timers import Timer, TimerHeap

logger = logging.getLogger(__name__)


class DeadLetters:
    """The dead-letter set, oldest first."""

    def __init__(
        self, timers: TimerHeap, max_entries: int, on_expire: Callable[[str], None]
    ) -> None:
        self._timers = timers
        self._max_entries = max_entries
        self._on_expire = on_expire
        self._entries: dict[str, tuple[TaskRecord, float, Timer]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def add(self, record: TaskRecord, dead_at: float, until: float) -> None:
        """Keep ``record`` (which died at wall time ``dead_at``) until monotonic ``until``."""
        task_id = record.task_id
        timer = self._timers.schedule(until, lambda: self._on_expire(task_id))
        self._entries[task_id] = (record, dead_at, timer)
        record.dead_lettered = True
        while len(self._entries) > self._max_entries:
            oldest = next(iter(self._entries))
            logger.warning(
                "dead-letter set full (max_dead_letters=%d): dropping oldest id=%s",
                self._max_entries,
                oldest,
            )
            self._on_expire(oldest)
            self.remove(oldest)  # in case the callback kept it

    def remove(self, task_id: str) -> TaskRecord | None:
        """Take ``task_id`` out of the set; returns its record, or None when absent."""
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return None
        record, _, timer = entry
        timer.cancel()
        record.dead_lettered = False
        return record

    def select(self, queue: str = "") -> Iterator[tuple[TaskRecord, float]]:
        """Dead letters (record, dead_at), oldest first, optionally of one queue."""
        for record, dead_at, _ in self._entries.values():
            if not queue or record.spec.queue == queue:
                yield record, dead_at
