"""Idempotency keys: a repeat submit with the same key within its window returns the first task."""

from __future__ import annotations

from broker.core.timers import Timer, TimerHeap


class IdempotencyKeys:
    """Keys remembered for their window, each pointing at the task it created."""

    def __init__(self, timers: TimerHeap) -> None:
        self._timers = timers
        self._keys: dict[str, tuple[str, Timer]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str) -> str | None:
        """The task id remembered for ``key``, if its window is still open."""
        entry = self._keys.get(key)
        return entry[0] if entry else None

    def remember(self, key: str, task_id: str, until: float) -> None:
        """Map ``key`` to ``task_id`` until the monotonic time ``until``."""
        previous = self._keys.get(key)
        if previous is not None:
            previous[1].cancel()
        timer = self._timers.schedule(until, lambda: self._forget(key))
        self._keys[key] = (task_id, timer)

    def _forget(self, key: str) -> None:
        del self._keys[key]
