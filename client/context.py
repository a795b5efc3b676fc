"""The running task's context: what ``self.request`` returns and where ``update_state`` goes.

The worker wraps each execution in :func:`executing`, which sets two ``ContextVar`` s for its
duration. Context variables (rather than thread-locals) make this correct for every pool: threads
each see their own value, and each asyncio task copies the context it was created in.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Request:
    """What a running task knows about its own delivery (``self.request`` in a bound task).

    Attributes:
        id: The task id.
        name: The registered task name.
        retries: How many retries happened before this attempt (0 on the first run).
        attempt: Deliveries so far including this one (redeliveries after a worker died count).
        queue: The queue the task came from.
        eta: When the task was scheduled to run, if it was delayed.
        expires: When the task expires, if set.
        headers: The string headers the caller attached (trace context and the like).
        lease_id: The broker's lease for this attempt.
        hostname: The worker's host name.
        time_limit: Hard limit in seconds for this attempt, if any.
        soft_time_limit: Soft limit in seconds for this attempt, if any.
        max_retries: The caller's per-call ``max_retries`` override, if any.
        called_directly: The task was called like a function (``add(1, 2)``).
        is_eager: The task runs eagerly (``apply()`` or ``task_always_eager``).
        delivery_info: Celery's keys: ``exchange`` (always ""), ``routing_key`` (the queue),
            ``priority`` and ``redelivered`` (True from the second delivery on).
    """

    id: str
    name: str
    retries: int = 0
    attempt: int = 1
    queue: str = "default"
    eta: datetime | None = None
    expires: datetime | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    lease_id: str = ""
    hostname: str = ""
    time_limit: float | None = None
    soft_time_limit: float | None = None
    max_retries: int | None = None
    # True when the task was called like a function (``add(1, 2)``) rather than by a worker.
    called_directly: bool = False
    # True when the task runs through ``apply()`` or ``task_always_eager`` (client.eager).
    is_eager: bool = False
    delivery_info: Mapping[str, object] = field(default_factory=dict)


class TaskReporter(Protocol):
    """Where a running task's custom states and heartbeats go; the worker provides one."""

    def update_state(self, state: str, meta: object) -> None:
        """Publish a custom state (e.g. ``"PROGRESS"``) with its meta for clients to read."""

    def heartbeat(self, progress: object, extend: float | None) -> None:
        """Extend the task's lease by ``extend`` seconds (or the default) and report progress."""


class DirectCallReporter:
    """The reporter used when a task is called like a function: there is nobody to tell."""

    def update_state(self, state: str, meta: object) -> None:
        """Do nothing: a directly called task has no broker-side state."""

    def heartbeat(self, progress: object, extend: float | None) -> None:
        """Do nothing: a directly called task holds no lease."""


_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "celeriac_request", default=None
)
_reporter: contextvars.ContextVar[TaskReporter | None] = contextvars.ContextVar(
    "celeriac_reporter", default=None
)


class executing:  # lower case like contextlib.suppress: it reads as `with executing(...)`
    """Make ``request`` and ``reporter`` the current task's context until the block ends.

    Args:
        request: The delivery being executed.
        reporter: Receives ``update_state`` and ``heartbeat`` calls made by the task.

    The context is restored when the block exits, even on error. A class rather than a
    ``@contextmanager`` generator: it wraps every task the worker runs, and costs half as much.
    """

    __slots__ = ("_reporter", "_reporter_token", "_request", "_request_token")

    def __init__(self, request: Request, reporter: TaskReporter) -> None:
        self._request = request
        self._reporter = reporter

    def __enter__(self) -> None:
        self._request_token = _request.set(self._request)
        self._reporter_token = _reporter.set(self._reporter)

    def __exit__(self, *exc_info: object) -> None:
        _reporter.reset(self._reporter_token)
        _request.reset(self._request_token)


def current_request() -> Request | None:
    """Return the request of the task running in this context, or None outside a task."""
    return _request.get()


def current_reporter() -> TaskReporter | None:
    """Return the reporter of the task running in this context, or None outside a task."""
    return _reporter.get()
