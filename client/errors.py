"""Every error the Celeriac client raises, in one tree rooted at :class:`CeleriacError`.

The tree mirrors ``celery.exceptions`` where Celery has a counterpart, so that code moving from
Celery finds the names it expects. Several classes also derive from the builtin a Python
programmer would reach for first (``TimeoutError``, ``TypeError``, ``ValueError``), so an
``except TimeoutError:`` written without knowing Celeriac still works.

The table that maps the broker's reasons and gRPC status codes onto this tree lives in
``client.status``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from celeriac.settings import InvalidSetting


class CeleriacError(Exception):
    """Base class of every error raised by the Celeriac client.

    Attributes:
        reason: The broker's stable name for a refusal (google.rpc.ErrorInfo's reason, e.g.
            ``"QUEUE_FULL"``; see the list in proto/celeriac/v1/client.proto), or ``""`` for an
            error that did not come from the broker with one.
        metadata: The refusal's facts from the broker (``"limit"``, ``"max"``, ``"value"``).
    """

    reason: str = ""
    metadata: Mapping[str, str] = MappingProxyType({})


class ConfigurationError(CeleriacError, InvalidSetting):
    """A configuration value (broker address, timeout, route) is malformed."""


class BrokerUnavailable(CeleriacError):
    """The broker could not be reached, or stopped answering, within the configured time."""


class BrokerGone(BrokerUnavailable):
    """The broker went away during a call: it is shutting down, or the connection broke.

    A submit (its task id makes it safe to repeat) and a result read are sent once more, to the
    broker that is back within ``connect_timeout``, before this reaches the caller.
    """


class AuthenticationError(CeleriacError):
    """The broker wants a bearer token (``token=`` or ``CELERIAC_TOKEN``), or does not know it."""


class PermissionDenied(CeleriacError, PermissionError):
    """The token is valid but its role may not make this call (e.g. a worker token submitting)."""


class TimeoutError(CeleriacError, builtins.TimeoutError):
    """A result was not ready within the ``timeout`` the caller gave."""


class TaskNotFound(CeleriacError, LookupError):
    """The broker has no record of a task id (never submitted, forgotten, or expired)."""


class TaskRevokedError(CeleriacError):
    """The task was revoked before or while it ran."""


class SerializationError(CeleriacError, TypeError):
    """A value could not be encoded or decoded; the message names the offending type."""


class ContentTypeRefused(CeleriacError):
    """A payload uses a content type this side does not accept (unknown, or pickle not enabled)."""


class InvalidTaskSpec(CeleriacError, ValueError):
    """A task's options are invalid (negative countdown, priority out of range, ...)."""


class LimitExceeded(CeleriacError):
    """The broker refused the call because one of its resource limits is reached.

    ``reason`` says which (``HELD_BYTES_EXCEEDED``, ``HELD_CALLS_EXCEEDED``,
    ``QUEUES_EXCEEDED``, ``SESSIONS_EXCEEDED``, ...) and ``metadata`` the limit's value.
    """


class QueueFull(LimitExceeded):
    """The broker refused the task because its queue is at capacity."""


class PayloadTooLarge(LimitExceeded):
    """The broker refused the task because its encoded arguments exceed the broker's limit."""


class NotRegistered(CeleriacError, KeyError):
    """No task of this name is registered (with an app, or with the worker that received it)."""

    def __str__(self) -> str:
        # KeyError would otherwise quote the message: "'tasks.add'" instead of tasks.add.
        return str(self.args[0]) if self.args else ""


class OutsideTaskError(CeleriacError, RuntimeError):
    """``update_state``, ``heartbeat`` or ``request`` was used outside a running task."""


class RemoteTaskError(CeleriacError):
    """A task failed with an exception whose type cannot be rebuilt on this side.

    Attributes:
        type_name: The remote exception's qualified type name, e.g. ``"myapp.errors.Oops"``.
        message: ``str()`` of the remote exception.
        remote_traceback: The traceback formatted on the worker, or ``""``.
        kind: The language-neutral kind of the failure (``"user_error"``, ``"timeout"``,
            ``"worker_lost"``, ...; tasks.proto ``TaskErrorKind``), or ``""``.
    """

    def __init__(
        self, type_name: str, message: str, remote_traceback: str = "", kind: str = ""
    ) -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.kind = kind

    def __reduce__(self) -> tuple[type[RemoteTaskError], tuple[str, str, str, str]]:
        return (RemoteTaskError, (self.type_name, self.message, self.remote_traceback, self.kind))


class Retry(CeleriacError):
    """Raised by ``task.retry()`` to ask the worker for another attempt.

    It is not an error of the task: the worker catches it and tells the broker to schedule the
    next attempt. Tasks should let it propagate (``raise self.retry(...)`` reads well too).

    Attributes:
        exc: The exception that caused the retry; reported as the final error when no retries
            are left.
        countdown: Seconds to wait before the next attempt, or None for the task's default.
        eta: When to run the next attempt, or None. Takes precedence over ``countdown``.
        max_retries: Overrides the task's ``max_retries`` for this decision, or None.
    """

    def __init__(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> None:
        when = ""
        if eta is not None:
            when = f"at {eta.isoformat()}"
        elif countdown is not None:
            when = f"in {countdown}s"
        super().__init__(" ".join(part for part in ("Retry", when, _describe(exc)) if part))
        self.exc = exc
        self.countdown = countdown
        self.eta = eta
        self.max_retries = max_retries


class SoftTimeLimitExceeded(CeleriacError):
    """Raised inside a running task when its soft time limit passes; catch it to clean up."""


class TimeLimitExceeded(CeleriacError):
    """The task ran past its hard time limit and was killed."""


class TaskExpired(TaskRevokedError):
    """The task reached its ``expires`` time before it could run, so it never ran.

    Its state is REVOKED, as in Celery; ``except TaskRevokedError`` catches it too.
    """


class Replaced(CeleriacError):
    """Raised by ``self.replace(sig)`` to end a task that handed its place to another.

    The worker reports the replacement's id; the broker gives the task the replacement's
    outcome once it finishes. Do not catch it in the task.
    """

    def __init__(self, task_id: str) -> None:
        super().__init__(f"replaced by task {task_id}")
        self.task_id = task_id


class ChordError(CeleriacError):
    """A chord's body did not run because a member of its header failed (Celery's name).

    The message names the member: ``Dependency <id> raised <Type>('<message>')``.
    """


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return f"after {type(exc).__name__}: {exc}"
