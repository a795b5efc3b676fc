"""Plain data the worker passes around: jobs in, outcomes and task events out.

These dataclasses are what every part of the worker speaks; protobuf types stop in `codec`.
`Payload`, `Job` and `Outcome` are built for every task on the hot path, so they are slotted and
not frozen: a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
which makes a `Job` three times as dear to build (3.4 against 1 µs). Treat them as read-only all
the same (`dataclasses.replace` makes a changed copy); being mutable, they are not hashable, nor
is a frozen event that holds a `Payload`. The process pool sends jobs and outcomes to
its children as tuples (`worker.pools.wire`); the rest are picklable as they are.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class Payload:
    """Encoded bytes and the content type that says how to decode them."""

    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ParentResult:
    """The outcome of one task a dependent job waited for (a chain link, a chord member)."""

    task_id: str
    name: str = ""
    result: Payload | None = None
    error: TaskErrorInfo | None = None


@dataclass(slots=True)
class Job:
    """One task attempt to execute, under the broker's lease.

    Time limits are the effective ones (call, else task option, else worker default); the
    worker resolves them with `execution.resolve_limits` before a pool sees the job.
    `max_payload_bytes` is the largest result (or progress) body the broker that assigned the
    job will take (see `worker.limits`); None means no check where the task runs.
    """

    lease_id: str
    task_id: str
    name: str
    args: Payload
    attempt: int = 1
    retries: int = 0
    queue: str = "default"
    headers: Mapping[str, str] = field(default_factory=dict)
    eta: datetime | None = None
    expires: datetime | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool = False
    priority: int = 0
    max_retries: int | None = None
    max_payload_bytes: int | None = None
    # A dependent task (a workflow): how it depends ("result", "results", "errback",
    # "ignore"; "" for a plain task) and its parents' outcomes (see worker.parents).
    dependency_mode: str = ""
    parents: tuple[ParentResult, ...] = ()


class OutcomeState(enum.Enum):
    """How one attempt ended (the states an Outcome may carry on the wire)."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    RETRY = "RETRY"
    REVOKED = "REVOKED"


@dataclass(frozen=True)
class TaskErrorInfo:
    """A task's error as data: qualified type name, message, formatted traceback."""

    type: str
    message: str
    traceback: str = ""
    retryable: bool = True


@dataclass(slots=True)
class Outcome:
    """The end of one attempt.

    Attributes:
        lease_id: The lease the attempt ran under.
        state: SUCCESS, FAILURE, RETRY or REVOKED.
        result: The encoded return value (SUCCESS; None when results are ignored).
        error: Why it failed, retries or was revoked.
        retry_countdown: RETRY: seconds to wait before the next attempt.
        retry_eta: RETRY: when to run again, instead of a countdown.
        max_retries: RETRY: the limit applied; None means retry forever.
    """

    lease_id: str
    state: OutcomeState
    result: Payload | None = None
    error: TaskErrorInfo | None = None
    retry_countdown: float | None = None
    retry_eta: datetime | None = None
    max_retries: int | None = None
    # Task.replace: the id of the task that took this one's place (state SUCCESS, no result).
    replaced_by: str = ""


@dataclass(frozen=True)
class StateUpdate:
    """A custom state set by a running task (`self.update_state`)."""

    lease_id: str
    state: str
    meta: Payload


@dataclass(frozen=True)
class Heartbeat:
    """A running task asking to keep its lease (`self.heartbeat`), with optional progress."""

    lease_id: str
    extend: float | None
    progress: Payload | None


TaskEvent = StateUpdate | Heartbeat
