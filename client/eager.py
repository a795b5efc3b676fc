"""Eager execution: a task run here and now, in the calling thread, with no broker or worker.

``add.apply((1, 2))`` runs the task like Celery's ``Task.apply``: with a request (bound tasks
see ``self.request``, with ``is_eager`` true), its retries (``self.retry()`` and
``autoretry_for`` run the task again at once, with no countdown, up to its ``max_retries``),
its class-based hooks and the task signals, and returns an :class:`EagerResult` holding the
value or the exception. With ``task_always_eager=True`` on the app, ``delay()`` and
``apply_async()`` do the same, which is how Celery users test task code without a broker;
``task_eager_propagates=True`` (or ``apply(throw=True)``) raises a failure at once instead of
storing it.

Arguments are not serialized on the way in, as in Celery: eager mode tests the task's logic,
not the wire. ``send_task`` by name always goes to the broker, as in Celery.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from client import states
from client.context import DirectCallReporter, Request, executing
from client.errors import Retry, TaskRevokedError
from client.result import AsyncResult
from client.task import ExceptionInfo

if TYPE_CHECKING:
    from client.task import Task


class EagerResult(AsyncResult):
    """The result of a task run eagerly: already final, never asks a broker."""

    def __init__(
        self,
        task: Task,
        task_id: str,
        state: str,
        value: Any,
        *,
        retries: int,
        error: BaseException | None = None,
    ) -> None:
        super().__init__(task_id, app=task.app)
        self._task_name = task.name
        self._state = state
        self._value = value
        self._retries = retries
        self._error = error
        self._traceback = ExceptionInfo(error).traceback if error is not None else None
        self._done = datetime.now(UTC)

    def __repr__(self) -> str:
        return f"<EagerResult {self.id} {self._state}>"

    @property
    def state(self) -> str:
        """SUCCESS or FAILURE (an eager task is finished once ``apply`` returns)."""
        return self._state

    status = state

    def ready(self) -> bool:
        """Always True."""
        return True

    def successful(self) -> bool:
        """Whether the task returned."""
        return self._state == states.SUCCESS

    def failed(self) -> bool:
        """Whether the task raised (after its retries)."""
        return self._state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception the task raised."""
        return self._error if self._error is not None else self._value

    @property
    def info(self) -> Any:
        """Same as ``result``."""
        return self.result

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of a failure, or None."""
        return self._traceback

    @property
    def date_done(self) -> datetime | None:
        """When ``apply`` finished."""
        return self._done

    @property
    def retries(self) -> int:
        """Retries the eager run went through."""
        return self._retries

    @property
    def name(self) -> str | None:
        """The task's name."""
        return self._task_name

    @property
    def queue(self) -> str | None:
        """None: an eager task never went through a queue."""
        return None

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> Any:
        """The return value; a failure's exception is raised when ``propagate`` (the default)."""
        if self._error is not None and propagate:
            raise self._error
        return self.result

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Like :meth:`get`."""
        return self.get(timeout, propagate)

    async def astate(self) -> str:
        """Like :attr:`state`."""
        return self._state

    async def aready(self) -> bool:
        """Always True."""
        return True

    async def aresult(self) -> Any:
        """Like :attr:`result`."""
        return self.result

    def revoke(self, terminate: bool = False, reason: str = "") -> str:
        """Nothing to revoke: the task already ran."""
        return "already-finished"

    def forget(self) -> None:
        """Nothing is stored anywhere: a no-op."""


def apply(
    task: Task,
    args: tuple[Any, ...] | list[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    *,
    task_id: str | None = None,
    retries: int = 0,
    throw: bool | None = None,
    headers: Mapping[str, str] | None = None,
    max_retries: int | None = None,
) -> EagerResult:
    """Run ``task`` in this thread until it succeeds or fails for good (see the module doc).

    Args:
        task: The task.
        args: Positional arguments.
        kwargs: Keyword arguments.
        task_id: The id its request shows; a fresh UUID when None.
        retries: Retries to count as already done.
        throw: Raise a failure instead of returning it; the app's ``task_eager_propagates``
            when None.
        headers: The request's headers.
        max_retries: This call's retry limit (the task's own when None).

    Returns:
        The finished result.
    """
    task_id = task_id or str(uuid.uuid4())
    call_args = tuple(args or ())
    call_kwargs = dict(kwargs or {})
    if throw is None:
        throw = task.app.config.task_eager_propagates
    while True:
        request = Request(
            id=task_id,
            name=task.name,
            retries=retries,
            attempt=retries + 1,
            headers=dict(headers or {}),
            hostname="eager",
            max_retries=max_retries,
            is_eager=True,
        )
        with executing(request, DirectCallReporter()):
            task.before_attempt(task_id, call_args, call_kwargs)
            try:
                value = _run(task, call_args, call_kwargs)
            except (Exception, SystemExit) as exc:
                limit = _retry_limit(task, exc, max_retries)
                if limit is not False and (limit is None or retries < limit):
                    task.after_attempt(
                        states.RETRY, None, _cause(exc), task_id, call_args, call_kwargs
                    )
                    retries += 1
                    continue
                failure = _cause(exc)
                task.after_attempt(states.FAILURE, None, failure, task_id, call_args, call_kwargs)
                if throw:
                    raise failure from None
                return EagerResult(
                    task, task_id, states.FAILURE, None, retries=retries, error=failure
                )
            task.after_attempt(states.SUCCESS, value, None, task_id, call_args, call_kwargs)
        return EagerResult(task, task_id, states.SUCCESS, value, retries=retries)


def _run(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    value = task.run(task, *args, **kwargs) if task.options.bind else task.run(*args, **kwargs)
    if inspect.isawaitable(value):
        value = asyncio.run(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


def _cause(exc: BaseException) -> BaseException:
    """What failed: the exception a ``Retry`` carries, else the exception itself."""
    if isinstance(exc, Retry) and exc.exc is not None:
        return exc.exc
    return exc


def _retry_limit(task: Task, exc: BaseException, call_limit: int | None) -> int | bool | None:
    """The retry limit that applies to ``exc`` (None: unlimited), or False when it never retries."""
    options = task.options
    limit = call_limit if call_limit is not None else options.max_retries
    if isinstance(exc, Retry):
        return exc.max_retries if exc.max_retries is not None else limit
    if isinstance(exc, TaskRevokedError) or not options.autoretry_for:
        return False
    if isinstance(exc, options.dont_autoretry_for) or not isinstance(exc, options.autoretry_for):
        return False
    limit = options.retry_kwargs.get("max_retries", limit)
    return limit if limit is None else int(limit)
