"""One timer heap for every deadline in the broker.

Eta and retry backoff, task expiry, lease deadlines, session grace and liveness, result,
idempotency-key and dead-letter expiry all live here. The service arms a single event-loop
timer at :meth:`TimerHeap.next_deadline` and calls :meth:`TimerHeap.fire_due` when it rings.
Cancelled timers stay in the heap and are skipped when they surface.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timer:
    """A scheduled callback; :meth:`cancel` makes it a no-op."""

    __slots__ = ("action", "cancelled", "deadline")

    def __init__(self, deadline: float, action: Callable[[], None]) -> None:
        self.deadline = deadline
        self.action = action
        self.cancelled = False

    def cancel(self) -> None:
        """Make sure the action never runs."""
        self.cancelled = True


class TimerHeap:
    """A min-heap of timers keyed by monotonic deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, deadline: float, action: Callable[[], None]) -> Timer:
        """Run ``action`` once the monotonic clock reaches ``deadline``."""
        timer = Timer(deadline, action)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> int:
        """Run every live timer whose deadline is at or before ``now``; return how many ran."""
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if not timer.cancelled:
                timer.cancelled = True
                timer.action()
                fired += 1
        return fired
