"""Plain records that cross the transport boundary, so no other module sees protobuf types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from client import states


@dataclass(frozen=True)
class EncodedValue:
    """Bytes plus the content type that decodes them (a task's result, meta or progress)."""

    content_type: str
    body: bytes


@dataclass(frozen=True)
class ResolvedOptions:
    """Everything about a task submission except its id and arguments, fully resolved.

    The tasks of a group that share a name and options share one of these, so the options are
    resolved (and put on the wire) once per group instead of once per task.
    """

    name: str
    queue: str
    headers: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    idempotency_key: str = ""
    idempotency_window: float | None = None
    ignore_result: bool = False
    result_ttl: float | None = None
    max_retries: int | None = None
    concurrency_key: str = ""
    concurrency_limit: int = 0
    # How the arguments are encoded: application/json or application/x-python-pickle.
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """One task, fully resolved and encoded, ready to be submitted."""

    task_id: str
    args: EncodedValue
    options: ResolvedOptions
    # Workflows: the ids this task waits for and how ("result", "results", "errback",
    # "ignore", "barrier"; see DependencyMode in tasks.proto).
    depends_on: tuple[str, ...] = ()
    dependency_mode: str = ""


@dataclass(frozen=True)
class Submitted:
    """The broker's answer to one submitted task."""

    task_id: str
    # False when the task id or idempotency key matched a task the broker already had.
    created: bool
    state: str
    # Keeps the session's result watch alive (see client.call_stream); opaque up here.
    watch: object | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RemoteError:
    """A task's error as the worker reported it."""

    type_name: str
    message: str
    traceback: str = ""
    retryable: bool = False
    # The language-neutral kind (tasks.proto TaskErrorKind, lower case: "user_error",
    # "timeout", "revoked", "expired", "worker_lost", ...), "" from a broker without it.
    kind: str = ""


# Not frozen (nothing changes a record once built): a frozen dataclass sets each field through
# object.__setattr__, 1.8 µs per record against 0.45, and GroupResult.get() builds one per task.
@dataclass(slots=True)
class ResultRecord:
    """What the broker knows about a task at one moment."""

    task_id: str
    state: str
    custom_state: str = ""
    result: EncodedValue | None = None
    error: RemoteError | None = None
    name: str = ""
    queue: str = ""
    retries: int = 0
    attempts: int = 0
    date_done: datetime | None = None
    eta: datetime | None = None
    worker_id: str = ""
    dead_lettered: bool = False
    progress: EncodedValue | None = None
    # The tasks it waited for (a saved group's members, a chord body's header).
    depends_on: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        """Whether the task reached a final state (SUCCESS, FAILURE or REVOKED)."""
        return self.state in states.READY_STATES

    @property
    def visible_state(self) -> str:
        """The state to show a user: the task's custom state while it has one."""
        return self.custom_state or self.state


@dataclass(frozen=True)
class ServerInfo:
    """Version, features and limits of a broker."""

    version: str
    protocol: str
    features: tuple[str, ...]
    max_payload_bytes: int
    max_batch: int
    max_wait: float
    uptime: float
    max_message_bytes: int = 0  # 0: the broker did not say
