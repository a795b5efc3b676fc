"""Explicit task events: every state change of a task is one of these.

The core emits them from its single transition point to an optional sink, so a journal (or an
events stream) can be attached later without touching the state machine.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class EventKind(enum.Enum):
    """The kinds of task transitions."""

    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    LEASED = "leased"
    STARTED = "started"
    FINISHED = "finished"
    RETRIED = "retried"
    REQUEUED = "requeued"
    REVOKED = "revoked"
    EXPIRED = "expired"
    DEAD_LETTERED = "dead_lettered"
    FORGOTTEN = "forgotten"


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One transition of one task.

    Attributes:
        kind: What happened.
        task_id: The task it happened to.
        at: Wall-clock time of the transition.
        detail: A short free-form note (state name, lease id, reason).
    """

    kind: EventKind
    task_id: str
    at: float
    detail: str = ""


EventSink = Callable[[TaskEvent], None]
