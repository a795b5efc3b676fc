"""The values the core works with: task specs, task records, reports from workers.

Times are floats: wall-clock epoch seconds for anything a user sees (eta, expires, date_done),
monotonic seconds for internal deadlines.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.core.periodic import PeriodicSpec

DEFAULT_QUEUE = "default"
# The headers of every spec submitted without any: one read-only map instead of one per task.
NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class TaskState(enum.Enum):
    """The states a client can observe; names are Celery's, plus UNKNOWN."""

    UNKNOWN = "UNKNOWN"
    PENDING = "PENDING"
    STARTED = "STARTED"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"


READY_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED})


class Phase(enum.Enum):
    """Where a task is inside the broker (finer than the state a client sees)."""

    WAITING = "waiting"  # held until the tasks it depends on finish (broker.core.workflows)
    QUEUED = "queued"  # in a ready queue, waiting for credit
    SCHEDULED = "scheduled"  # waiting in the timer heap for its eta or retry backoff
    LEASED = "leased"  # assigned to a worker under a lease
    FINISHED = "finished"  # SUCCESS, FAILURE or REVOKED


@dataclass(frozen=True, slots=True)
class Payload:
    """Opaque bytes and their content type; the broker never decodes them."""

    content_type: str
    body: bytes


class ErrorKind(enum.Enum):
    """The language-neutral kind of a task's failure (``TaskErrorKind`` in tasks.proto)."""

    UNSPECIFIED = "unspecified"
    USER_ERROR = "user_error"
    TIMEOUT = "timeout"
    REVOKED = "revoked"
    EXPIRED = "expired"
    WORKER_LOST = "worker_lost"
    NOT_REGISTERED = "not_registered"
    SERIALIZATION = "serialization"
    RESULT_TOO_LARGE = "result_too_large"


# Celeriac's own error types, by the bare name workers and the broker give them, and their kind.
# Any other error a worker reports is the task's own: USER_ERROR.
_KIND_BY_TYPE = {
    "TimeLimitExceeded": ErrorKind.TIMEOUT,
    "SoftTimeLimitExceeded": ErrorKind.TIMEOUT,
    "TaskRevoked": ErrorKind.REVOKED,
    "TaskRevokedError": ErrorKind.REVOKED,
    "TaskExpired": ErrorKind.EXPIRED,
    "WorkerLost": ErrorKind.WORKER_LOST,
    "WorkerLostError": ErrorKind.WORKER_LOST,
    "NotRegistered": ErrorKind.NOT_REGISTERED,
    "SerializationError": ErrorKind.SERIALIZATION,
    "ContentTypeRefused": ErrorKind.SERIALIZATION,
    "ResultTooLarge": ErrorKind.RESULT_TOO_LARGE,
}


def classify(type_name: str) -> ErrorKind:
    """The kind of an error a worker reported without one, from its type name."""
    return _KIND_BY_TYPE.get(type_name.rpartition(".")[2], ErrorKind.USER_ERROR)


@dataclass(frozen=True, slots=True)
class TaskError:
    """A task's error as data; ``kind`` is derived from ``type`` unless given."""

    type: str
    message: str
    traceback: str = ""
    retryable: bool = False
    kind: ErrorKind = ErrorKind.UNSPECIFIED

    def __post_init__(self) -> None:
        if self.kind is ErrorKind.UNSPECIFIED:
            object.__setattr__(self, "kind", classify(self.type))


class DependencyMode(enum.Enum):
    """How a task depends on ``TaskSpec.depends_on`` (``DependencyMode`` in tasks.proto)."""

    IGNORE = "ignore"  # runs after every parent succeeded, receives nothing (.si())
    RESULT = "result"  # runs after its one parent succeeded, receives its result (chain link)
    RESULTS = "results"  # runs after every parent succeeded, receives their results (chord body)
    ERRBACK = "errback"  # runs only if its one parent ends FAILURE (link_error)
    BARRIER = "barrier"  # never runs: finished by the broker once every parent finished


@dataclass(frozen=True, slots=True)
class ParentOutcome:
    """What a dependent task receives from one parent when it is released."""

    task_id: str
    name: str
    result: Payload | None = None
    error: TaskError | None = None


@dataclass(slots=True)
class TaskSpec:
    """What a client submits. See ``TaskSpec`` in tasks.proto for each field's meaning.

    Never changed once built, but not declared frozen: a frozen dataclass sets each of these 15
    fields through ``object.__setattr__``, which was a fifth of the broker's cost of taking in a
    batch (decoding 10,000 specs: ~26 ms frozen, ~11 ms not).
    """

    name: str
    task_id: str = ""
    queue: str = DEFAULT_QUEUE
    args: Payload | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: NO_HEADERS)
    priority: int = 0
    eta: float | None = None
    expires: float | None = None
    time_limit_ms: int = 0
    soft_time_limit_ms: int = 0
    idempotency_key: str = ""
    idempotency_window_ms: int = 0
    ignore_result: bool = False
    result_ttl_ms: int = 0
    max_retries: int | None = None
    # At most concurrency_limit leases at once for this key (the task name when empty).
    concurrency_key: str = ""
    concurrency_limit: int = 0
    # Workflows: the tasks this one waits for, and how (see broker.core.workflows).
    depends_on: tuple[str, ...] = ()
    dependency_mode: DependencyMode = DependencyMode.RESULT


class TaskRecord:
    """Everything the broker holds about one task.

    Slotted and small: a queued task with small arguments costs well under 1 KiB. Only the
    transition methods of :class:`broker.core.lifecycle.Lifecycle` change ``phase``/``state``.
    """

    __slots__ = (
        "args",
        "attempts",
        "custom_state",
        "date_done",
        "dead_lettered",
        "due",
        "error",
        "held_bytes",
        "inputs",
        "journal_row",
        "lease_id",
        "phase",
        "progress",
        "queue_entry",
        "redeliveries",
        "replaced_by",
        "result",
        "retries",
        "seq",
        "spec",
        "state",
        "task_id",
        "worker_id",
    )

    def __init__(self, task_id: str, spec: TaskSpec) -> None:
        self.task_id = task_id
        self.spec = spec
        # Kept apart from spec so a finished task can drop its arguments.
        self.args: Payload | None = spec.args
        self.phase = Phase.QUEUED
        self.state = TaskState.PENDING
        self.retries = 0
        self.attempts = 0
        self.redeliveries = 0
        self.worker_id = ""
        self.custom_state = ""
        self.result: Payload | None = None
        self.error: TaskError | None = None
        self.progress: Payload | None = None
        self.date_done: float | None = None
        self.due: float | None = None
        self.lease_id = ""
        self.dead_lettered = False
        # A released dependent task's parents' outcomes, handed to the worker with it.
        self.inputs: tuple[ParentOutcome, ...] | None = None
        # Task.replace: the task whose outcome this one takes when it finishes.
        self.replaced_by = ""
        # Whether a ready queue holds this record (broker.core.queues says how).
        self.queue_entry = 0
        # The payload bytes this record adds to Lifecycle.held_bytes (see Lifecycle.recount).
        self.held_bytes = 0
        # Journal bookkeeping, untouched in memory-only mode: the record's place in its queue's
        # order (front pushes negative, so they sort first) and the key of its row in the
        # store (0 until the row is written; the journal assigns keys in increasing order).
        self.seq = 0
        self.journal_row = 0

    @property
    def ready(self) -> bool:
        """True once the task has reached SUCCESS, FAILURE or REVOKED."""
        return self.phase is Phase.FINISHED


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt, as reported by a worker."""

    lease_id: str
    state: TaskState
    result: Payload | None = None
    error: TaskError | None = None
    retry_countdown_ms: int = 0
    retry_eta: float | None = None
    # None: the worker applied no limit.
    max_retries: int | None = None
    # Task.replace: the id of the task that took this one's place.
    replaced_by: str = ""


@dataclass(frozen=True, slots=True)
class LeaseExtension:
    """A heartbeat for a long task, with optional progress."""

    lease_id: str
    extend_ms: int
    progress: Payload | None = None


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A custom state set by a running task (``self.update_state``)."""

    lease_id: str
    state: str
    meta: Payload | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """A batch of updates from one worker session."""

    credit: int = 0
    started: tuple[str, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    extensions: tuple[LeaseExtension, ...] = ()
    state_updates: tuple[StateUpdate, ...] = ()
    returned: tuple[str, ...] = ()
    # Drop the credit held for the session before adding ``credit`` (a prefetch hand-back).
    withdraw_credit: bool = False


@dataclass(frozen=True, slots=True)
class Hello:
    """A worker introducing itself at the start of a session."""

    worker_id: str
    hostname: str = ""
    pid: int = 0
    queues: tuple[str, ...] = ()
    task_names: tuple[str, ...] = ()
    concurrency: int = 0
    pool: str = ""
    version: str = ""
    held_lease_ids: tuple[str, ...] = ()
    # (task name, tasks per second; 0 for none) for the tasks whose rate limit it declares.
    rate_limits: tuple[tuple[str, float], ...] = ()
    # The periodic entries its apps declare (broker.core.periodic.PeriodicSpec).
    periodic: tuple[PeriodicSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Assignment:
    """One task handed to a worker under a lease."""

    lease_id: str
    attempt: int
    record: TaskRecord


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The answer to one submitted spec."""

    task_id: str
    created: bool
    state: TaskState


class RevokeOutcome(enum.Enum):
    """What a revoke did to one task."""

    REVOKED = "revoked"
    CANCEL_SENT = "cancel_sent"
    ALREADY_FINISHED = "already_finished"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depths of one queue, for admin listings."""

    name: str
    ready: int
    scheduled: int
    leased: int
    consumers: int


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A task's global rate limit: in force, as workers declare it, and whether overridden."""

    per_second: float  # 0: no limit
    declared_per_second: float
    overridden: bool


@dataclass(slots=True)
class Cancel:
    """Leases a worker must stop running."""

    lease_ids: list[str] = field(default_factory=list)
    terminate: bool = False
    reason: str = ""
