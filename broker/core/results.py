"""The result store: finished tasks kept for their TTL, bounded in number, and their waiters.

Records of finished tasks are kept (without their arguments) until the result TTL passes; then
they are dropped and the id reads as UNKNOWN. When more than ``max_results`` finished tasks are
held, the oldest finished ones are evicted early and a WARNING is logged. Waiters are callbacks
run when every task they wait for is finished; the service turns them into futures.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable

from broker.core.model import TaskRecord
from broker.core.timers import Timer, TimerHeap

logger = logging.getLogger(__name__)


class Waiter:
    """A wait for a set of tasks to finish; runs its callback once, when the last one does."""

    __slots__ = ("_callback", "_pending", "_store")

    def __init__(self, store: ResultStore, pending: set[str], callback: Callable[[], None]) -> None:
        self._store = store
        self._pending = pending
        self._callback = callback

    @property
    def done(self) -> bool:
        """True when nothing is left to wait for."""
        return not self._pending

    def cancel(self) -> None:
        """Stop waiting (the caller went away); safe to call more than once."""
        for task_id in self._pending:
            self._store.remove_waiter(task_id, self)
        self._pending = set()

    def notify(self, task_id: str) -> None:
        """Called by the store when ``task_id`` finished."""
        self._pending.discard(task_id)
        if not self._pending:
            self._callback()


class ResultStore:
    """Bookkeeping of finished tasks: expiry, bound and waiters."""

    def __init__(self, timers: TimerHeap, max_results: int, drop: Callable[[str], None]) -> None:
        self._timers = timers
        self._max_results = max_results
        self._drop = drop
        # Finish order, oldest first; the value is the expiry timer.
        self._finished: OrderedDict[str, Timer] = OrderedDict()
        self._waiters: dict[str, list[Waiter]] = {}

    def __len__(self) -> int:
        return len(self._finished)

    @property
    def waiter_count(self) -> int:
        """Waiters currently registered (for tests and metrics)."""
        return sum(len(waiters) for waiters in self._waiters.values())

    def store(self, record: TaskRecord, expires_at: float) -> None:
        """Keep a just-finished record until ``expires_at`` (monotonic) and wake its waiters."""
        task_id = record.task_id
        self._finished[task_id] = self._timers.schedule(expires_at, lambda: self._expire(task_id))
        for waiter in self._waiters.pop(task_id, ()):
            waiter.notify(task_id)
        self._enforce_bound()

    def holds(self, task_id: str) -> bool:
        """True while ``task_id``'s result is within its TTL."""
        return task_id in self._finished

    def discard(self, task_id: str) -> bool:
        """Stop tracking ``task_id`` (forgotten or requeued); True if it was held."""
        timer = self._finished.pop(task_id, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def wait(self, pending: Iterable[str], callback: Callable[[], None]) -> Waiter:
        """Run ``callback`` once every id in ``pending`` (all unfinished) has finished."""
        waiter = Waiter(self, set(pending), callback)
        for task_id in waiter._pending:
            self._waiters.setdefault(task_id, []).append(waiter)
        return waiter

    def remove_waiter(self, task_id: str, waiter: Waiter) -> None:
        """Unregister ``waiter`` from ``task_id``."""
        waiters = self._waiters.get(task_id)
        if waiters is None:
            return
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            del self._waiters[task_id]

    def _expire(self, task_id: str) -> None:
        self._finished.pop(task_id, None)
        self._drop(task_id)

    def _enforce_bound(self) -> None:
        while len(self._finished) > self._max_results:
            task_id, timer = self._finished.popitem(last=False)
            timer.cancel()
            logger.warning(
                "result store full (max_results=%d): evicting oldest result id=%s",
                self._max_results,
                task_id,
            )
            self._drop(task_id)
