"""The result store: finished tasks kept for their TTL, bounded in number, and their waiters.

Records of finished tasks are kept (without their arguments) until the result TTL passes; then
they are dropped and the id reads as UNKNOWN. When more than ``max_results`` finished tasks are
held, the oldest finished ones are evicted early and a WARNING is logged. Waiters are callbacks
run when every task they wait for is finished; the service turns them into futures.

Expiry costs no timer per result. Results kept for the same TTL expire in the order they
finished, so each distinct TTL (the broker default, plus any a task sets) has its own queue in
finish order and one timer, for its oldest entry. A timer and closure per result cost ~350 bytes
and put a million heap entries in the broker's timer heap for a million stored results.
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
        # Per TTL: task id -> expiry (monotonic), in finish order, hence in expiry order too.
        self._by_ttl: dict[float, OrderedDict[str, float]] = {}
        # Per TTL: the timer armed for its oldest entry (None once that queue is gone).
        self._armed: dict[float, Timer] = {}
        self._count = 0
        self._waiters: dict[str, list[Waiter]] = {}

    def __len__(self) -> int:
        return self._count

    @property
    def waiter_count(self) -> int:
        """Waiters currently registered (for tests and metrics)."""
        return sum(len(waiters) for waiters in self._waiters.values())

    def waited(self, task_id: str) -> bool:
        """Whether a waiter waits for ``task_id``."""
        return task_id in self._waiters

    def waited_ids(self) -> list[str]:
        """Every task id a waiter waits for."""
        return list(self._waiters)

    def store(self, record: TaskRecord, now: float, ttl: float) -> None:
        """Keep a just-finished record for ``ttl`` s from ``now`` (monotonic); wake its waiters."""
        # Not held now: a task finishes once, and a revived dead letter was discarded first.
        task_id = record.task_id
        queue = self._by_ttl.get(ttl)
        if queue is None:
            queue = self._by_ttl[ttl] = OrderedDict()
        queue[task_id] = now + ttl
        self._count += 1
        if ttl not in self._armed:
            self._arm(ttl, now + ttl)
        for waiter in self._waiters.pop(task_id, ()):
            waiter.notify(task_id)
        self._enforce_bound()

    def holds(self, task_id: str) -> bool:
        """True while ``task_id``'s result is within its TTL."""
        return any(task_id in queue for queue in self._by_ttl.values())

    def discard(self, task_id: str) -> bool:
        """Stop tracking ``task_id`` (forgotten or requeued); True if it was held.

        Its queue's timer stays armed: when it rings it finds nothing due and re-arms.
        """
        for queue in self._by_ttl.values():
            if queue.pop(task_id, None) is not None:
                self._count -= 1
                return True
        return False

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

    def _arm(self, ttl: float, deadline: float) -> None:
        self._armed[ttl] = self._timers.schedule(deadline, lambda: self._expire_due(ttl, deadline))

    def _expire_due(self, ttl: float, now: float) -> None:
        """The timer of ``ttl``'s queue rang at ``now``: drop what expired, re-arm for the rest."""
        del self._armed[ttl]
        queue = self._by_ttl[ttl]
        while queue:
            task_id, expires_at = next(iter(queue.items()))
            if expires_at > now:
                self._arm(ttl, expires_at)
                return
            del queue[task_id]
            self._count -= 1
            self._drop(task_id)
        del self._by_ttl[ttl]

    def _enforce_bound(self) -> None:
        while self._count > self._max_results:
            task_id = self._oldest_finished()
            self.discard(task_id)
            logger.warning(
                "result store full (max_results=%d): evicting oldest result id=%s",
                self._max_results,
                task_id,
            )
            self._drop(task_id)

    def _oldest_finished(self) -> str:
        """The id finished longest ago: the oldest entry of one of the (few) TTL queues."""
        oldest: tuple[float, str] | None = None
        for ttl, queue in self._by_ttl.items():
            if queue:
                task_id, expires_at = next(iter(queue.items()))
                if oldest is None or expires_at - ttl < oldest[0]:
                    oldest = (expires_at - ttl, task_id)
        assert oldest is not None  # only called while the store holds more than its bound
        return oldest[1]
