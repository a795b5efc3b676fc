"""One timer heap for every deadline in the broker.

Eta and retry backoff, task expiry, lease deadlines, session grace and liveness, result,
idempotency-key and dead-letter expiry all live here. The service arms a single event-loop
timer at :meth:`TimerHeap.next_deadline` and calls :meth:`TimerHeap.fire_due` when it rings.

Cancelling is O(1): a cancelled timer stays in the heap and is skipped when it surfaces. Left at
that, timers cancelled long before their deadline would pile up (a result evicted from a full
store cancels an expiry a day away, once per task), so once cancelled timers are more than half
of the heap it is rebuilt without them, which costs O(n) at most once per n/2 cancels.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

# Heaps smaller than this are never compacted: rebuilding them would cost more than it saves.
_COMPACT_MIN = 1024


class Timer:
    """A scheduled callback; :meth:`cancel` makes it a no-op."""

    __slots__ = ("_heap", "action", "cancelled", "deadline")

    def __init__(self, deadline: float, action: Callable[[], None], heap: TimerHeap) -> None:
        self.deadline = deadline
        self.action = action
        self.cancelled = False
        self._heap: TimerHeap | None = heap

    def cancel(self) -> None:
        """Make sure the action never runs."""
        if self.cancelled:
            return
        self.cancelled = True
        heap, self._heap = self._heap, None
        if heap is not None:
            heap.note_cancelled()


class TimerHeap:
    """A min-heap of timers keyed by monotonic deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._cancelled = 0  # cancelled timers still in the heap

    def __len__(self) -> int:
        """Entries in the heap, cancelled ones included."""
        return len(self._heap)

    def schedule(self, deadline: float, action: Callable[[], None]) -> Timer:
        """Run ``action`` once the monotonic clock reaches ``deadline``."""
        timer = Timer(deadline, action, self)
        heapq.heappush(self._heap, (deadline, next(self._order), timer))
        return timer

    def note_cancelled(self) -> None:
        """Count a timer cancelled while in the heap; compact when they are the majority."""
        self._cancelled += 1
        heap = self._heap
        if len(heap) >= _COMPACT_MIN and 2 * self._cancelled > len(heap):
            # In place: fire_due may be iterating over this very list.
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None when nothing is scheduled."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def fire_due(self, now: float) -> int:
        """Run every live timer whose deadline is at or before ``now``; return how many ran."""
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True  # fired: a later cancel() is a no-op
            timer._heap = None
            timer.action()
            fired += 1
        return fired
