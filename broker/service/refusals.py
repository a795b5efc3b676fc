"""Refused requests: counted by reason for operators, logged at most once per kind per interval.

A peer sending garbage or hammering a limit must not fill the broker's log: each reason is
logged once, then at most once per ``interval`` seconds with how many more were refused
meanwhile, and never with a traceback. The counts since start are in ServerInfo.refused.
Only refusals an operator should notice are logged: bad input (INVALID_ARGUMENT and its
narrower reasons), limits (RESOURCE_EXHAUSTED) and calls without a valid token or role
(UNAUTHENTICATED, PERMISSION_DENIED; the token itself is never in the message); routine
answers such as an unknown task id or a stale lease are counted only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from broker.errors import (
    BrokerError,
    InvalidArgument,
    LimitExceeded,
    PermissionDenied,
    Unauthenticated,
)

# Refusals worth an operator's attention (rate-limited); the others are only counted.
LOGGED = (InvalidArgument, LimitExceeded, Unauthenticated, PermissionDenied)

logger = logging.getLogger(__name__)

# Seconds between two log lines about the same reason.
LOG_INTERVAL = 10.0
# A peer's text in a log line is cut to this many characters.
_MAX_LOGGED_CHARS = 300


class Refusals:
    """The broker's tally of refused requests.

    Args:
        interval: Seconds between two log lines about the same reason.
        clock: Monotonic time source (injected by tests).
    """

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._next_line: dict[str, float] = {}  # reason -> when it may be logged again
        self._unlogged: Counter[str] = Counter()  # reason -> refusals since its last line

    @property
    def counts(self) -> Mapping[str, int]:
        """Refusals since start, by reason."""
        return self._counts

    def record(self, error: BrokerError, where: str) -> None:
        """Count ``error`` (refused in ``where``, e.g. "TaskService.Submit") and maybe log it."""
        reason = error.reason
        self._counts[reason] += 1
        if not isinstance(error, LOGGED):
            return
        now = self._clock()
        if now < self._next_line.get(reason, now):
            self._unlogged[reason] += 1
            return
        self._next_line[reason] = now + self._interval
        more = self._unlogged.pop(reason, 0)
        since = f" (and {more} more {reason} in the last {self._interval:g} s)" if more else ""
        logger.warning("refused %s: %s: %s%s", where, reason, printable(str(error)), since)


def printable(text: str) -> str:
    """``text`` safe for one log line, so a peer cannot forge or hide log lines.

    Control, format (bidi) and other non-printable characters are escaped, and the text is cut
    to a bounded length.
    """
    if len(text) > _MAX_LOGGED_CHARS:
        text = text[:_MAX_LOGGED_CHARS] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
