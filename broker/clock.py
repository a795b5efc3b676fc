"""Time sources for the broker.

The core never reads the system clock directly; it is handed a :class:`Clock`, so tests can
drive eta, leases and expiry by hand with :class:`ManualClock`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the broker gets the time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for deadlines)."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (for eta, expires and dates shown to users)."""
        ...


class SystemClock:
    """The real clocks of this machine."""

    def monotonic(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """Return :func:`time.time`."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to; both readings advance together.

    Args:
        start_wall: Initial wall-clock reading (epoch seconds).
    """

    def __init__(self, start_wall: float = 1_700_000_000.0) -> None:
        self._mono = 1000.0
        self._wall = start_wall

    def monotonic(self) -> float:
        """Return the current monotonic reading."""
        return self._mono

    def time(self) -> float:
        """Return the current wall reading."""
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds`` (which must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._mono += seconds
        self._wall += seconds
