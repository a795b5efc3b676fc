"""Tasks: what ``@app.task`` turns a function into, and the options that shape its execution."""

from __future__ import annotations

import functools
import inspect
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from traceback import format_exception
from typing import TYPE_CHECKING, Any, NoReturn

from celeriac.rates import InvalidRate, parse_rate
from client import signals
from client.context import (
    DirectCallReporter,
    Request,
    TaskReporter,
    current_reporter,
    current_request,
    executing,
)
from client.errors import ContentTypeRefused, InvalidTaskSpec, OutsideTaskError, Replaced, Retry
from client.serialization import JSON, content_type_for

if TYPE_CHECKING:
    from client.app import Celeriac
    from client.canvas import Signature
    from client.eager import EagerResult
    from client.result import AsyncResult

logger = logging.getLogger(__name__)

# The methods a Task subclass may override to hear about each attempt (Celery's names).
_HOOKS = ("on_success", "on_failure", "on_retry", "after_return")

# Priorities run from 0 (the default, least urgent) to 9 (most urgent): higher always runs first.
MIN_PRIORITY = 0
MAX_PRIORITY = 9


@dataclass(frozen=True)
class TaskOptions:
    """How a task runs, declared once in ``@app.task(...)``; per-call options override some.

    Attributes:
        queue: Queue the task goes to unless a route or the call says otherwise.
        priority: 0..9 within a queue; 9 runs first. None means 0.
        bind: Pass the task itself as the first argument (``def fetch(self, url)``).
        max_retries: Retries allowed after the first attempt; None retries forever.
        autoretry_for: Exception types that trigger an automatic retry.
        dont_autoretry_for: Exception types that are never retried (checked first).
        retry_backoff: False for a fixed ``default_retry_delay``; True for exponential backoff
            from 1 s; a number for exponential backoff from that many seconds (delay =
            base * 2**retries).
        retry_backoff_max: Upper bound of the backoff delay, in seconds.
        retry_jitter: Draw the actual delay uniformly from [0, delay] so that tasks failing
            together do not retry together ("full jitter").
        default_retry_delay: Seconds before a retry when no backoff and no countdown is given.
            180 s is Celery's default.
        time_limit: Hard limit in seconds per attempt; the worker kills the attempt.
        soft_time_limit: Soft limit in seconds; ``SoftTimeLimitExceeded`` is raised in the task.
        ignore_result: Keep only the final state at the broker, not the return value.
        expires: Seconds after submission when the task may no longer start.
        result_ttl: Seconds the result is kept after the task finishes (broker default if None).
        serializer: Content type (or ``"json"``/``"pickle"``) for arguments and the result.
        acks_late: Accepted for Celery code. Every Celeriac task is acknowledged only once it
            ran (its lease ends with the outcome), which is Celery's ``acks_late=True``; with
            ``False`` (Celery's default) a task is still acknowledged late, never lost.
        track_started: Accepted for Celery code; STARTED is always tracked.
        throws: Expected exception types: the task still fails with them, but the worker logs
            one INFO line without a traceback instead of an ERROR with one, as Celery does.
        retry_kwargs: For ``autoretry_for`` retries, as in Celery: ``max_retries`` overrides
            the task's, ``countdown`` replaces the backoff delay.
        rate_limit: Celery's ``"10/s"``, ``"10/m"``, ``"10/h"`` or a number per second, but
            GLOBAL: the broker starts at most this many of the task per period across all
            workers together (Celery's limit is per worker). Workers declare it in their
            session hello; the latest worker to connect wins when two disagree.
        concurrency_limit: At most this many of the task run at once across all workers, per
            ``concurrency_key`` (an ``apply_async`` option; the task name when not given).
    """

    queue: str | None = None
    priority: int | None = None
    bind: bool = False
    max_retries: int | None = 3
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    default_retry_delay: float = 180
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool = False
    expires: float | None = None
    result_ttl: float | None = None
    serializer: str = JSON
    acks_late: bool = True
    track_started: bool = True
    throws: tuple[type[BaseException], ...] = ()
    retry_kwargs: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: str | float | None = None
    concurrency_limit: int | None = None

    def __post_init__(self) -> None:
        try:
            parse_rate(self.rate_limit)
        except InvalidRate as exc:
            raise InvalidTaskSpec(str(exc)) from None
        check_concurrency_limit(self.concurrency_limit)
        unknown = sorted(set(self.retry_kwargs) - {"max_retries", "countdown"})
        if unknown:
            raise InvalidTaskSpec(
                f"retry_kwargs accepts max_retries and countdown, got {', '.join(unknown)}"
            )
        countdown = self.retry_kwargs.get("countdown")
        if countdown is not None and countdown < 0:
            raise InvalidTaskSpec(f"retry_kwargs countdown must be >= 0 seconds, got {countdown}")
        if self.priority is not None:
            check_priority(self.priority)
        if self.max_retries is not None and self.max_retries < 0:
            raise InvalidTaskSpec(f"max_retries must be >= 0 or None, got {self.max_retries}")
        for name in ("time_limit", "soft_time_limit", "expires", "result_ttl"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InvalidTaskSpec(f"{name} must be a positive number of seconds, got {value}")
        for name in ("retry_backoff_max", "default_retry_delay"):
            if getattr(self, name) < 0:
                raise InvalidTaskSpec(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        if not isinstance(self.retry_backoff, bool) and self.retry_backoff < 0:
            raise InvalidTaskSpec(f"retry_backoff must be >= 0, got {self.retry_backoff}")
        try:
            # Normalise "json"/"pickle" so every later comparison sees a content type.
            object.__setattr__(self, "serializer", content_type_for(self.serializer))
        except ContentTypeRefused as exc:
            raise InvalidTaskSpec(str(exc)) from None


# Celery task options Celeriac does not offer yet, and why: refused by name, never ignored.
UNSUPPORTED_TASK_OPTIONS = {
    "typing": "argument checking at call time is not supported",
    "reject_on_worker_lost": "a task whose worker is lost is always redelivered (at least once), "
    "up to the broker's max_deliveries",
}

OPTION_NAMES = frozenset(f.name for f in fields(TaskOptions))


def check_task_options(options: Mapping[str, Any]) -> None:
    """Refuse unknown or unsupported ``@app.task`` options, naming each and why.

    Raises:
        InvalidTaskSpec: An option is unknown or not supported.
    """
    refused = sorted(set(options) & set(UNSUPPORTED_TASK_OPTIONS))
    if refused:
        name = refused[0]
        raise InvalidTaskSpec(
            f"task option {name!r} is not supported: {UNSUPPORTED_TASK_OPTIONS[name]}"
        )
    unknown = sorted(set(options) - OPTION_NAMES - {"base"})
    if unknown:
        known = ", ".join(sorted(OPTION_NAMES | {"base"}))
        raise InvalidTaskSpec(f"unknown task option(s) {', '.join(unknown)}; known: {known}")


def class_defaults(base: type[Task]) -> dict[str, Any]:
    """The options a Task subclass sets as class attributes (``max_retries = 5``), as in Celery."""
    defaults: dict[str, Any] = {}
    for cls in reversed(base.__mro__[: base.__mro__.index(Task)]):
        defaults.update({k: v for k, v in vars(cls).items() if k in OPTION_NAMES})
    return defaults


def check_concurrency_limit(limit: object) -> int | None:
    """Return ``limit`` if it is None or an int >= 1, else raise InvalidTaskSpec."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidTaskSpec(f"concurrency_limit must be an int >= 1 or None, got {limit!r}")
    return limit


def check_priority(priority: object) -> int:
    """Return ``priority`` if it is an int in 0..9 (9 runs first), else raise InvalidTaskSpec."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not MIN_PRIORITY <= priority <= MAX_PRIORITY
    ):
        raise InvalidTaskSpec(
            f"priority must be an int from {MIN_PRIORITY} to {MAX_PRIORITY} "
            f"({MAX_PRIORITY} runs first), got {priority!r}"
        )
    return priority


# Celery's built-in tasks are named under this prefix (inspect's registered() leaves them out).
BUILTIN_PREFIX = "celery."
# Celery's built-in task that hands on what it is given (every app registers it; see replace).
ACCUMULATE = BUILTIN_PREFIX + "accumulate"


def accumulate(*args: Any, **kwargs: Any) -> Any:
    """Celery's ``celery.accumulate``: its arguments, or only the one at ``index``."""
    index = kwargs.get("index")
    return args[index] if index is not None else args


class ExceptionInfo:
    """What Celery's hooks receive as ``einfo``: the exception and its formatted traceback."""

    __slots__ = ("exception", "tb", "traceback", "type")

    def __init__(self, exception: BaseException) -> None:
        self.exception = exception
        self.type = type(exception)
        self.tb = exception.__traceback__
        self.traceback = "".join(format_exception(exception))

    def __str__(self) -> str:
        return self.traceback


class Task:
    """A function registered with an app, callable locally and sendable to workers.

    Subclass it for Celery's class-based tasks: ``@app.task(base=DatabaseTask)`` builds the task
    from the subclass, whose class attributes (``max_retries = 5``, ``autoretry_for = (...)``)
    are option defaults that the decorator's arguments override, and whose hooks the worker
    calls after each attempt, in the process that ran it, while ``self.request`` still
    describes it: ``on_success(retval, task_id, args, kwargs)``,
    ``on_failure(exc, task_id, args, kwargs, einfo)``,
    ``on_retry(exc, task_id, args, kwargs, einfo)`` and
    ``after_return(status, retval, task_id, args, kwargs, einfo)``. A hook that raises is
    logged and changes nothing about the outcome.

    Attributes:
        name: The registered name, ``module.function`` by default.
        app: The app the task belongs to.
        run: The user's function (sync or ``async def``).
        options: How the task runs.
    """

    def __init__(
        self, app: Celeriac, name: str, run: Callable[..., Any], options: TaskOptions
    ) -> None:
        self.app = app
        self.name = name
        self.run = run
        self.options = options
        functools.update_wrapper(self, run)  # keeps __doc__, __module__, __wrapped__ for tools
        # Checked once here so that plain tasks pay nothing per run for hooks they lack.
        self.has_hooks = any(
            getattr(type(self), hook) is not getattr(Task, hook) for hook in _HOOKS
        )

    def before_attempt(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Announce an attempt about to run (``task_prerun``); the worker and eager mode call it."""
        if signals.task_prerun.receivers:
            signals.task_prerun.send(
                sender=self, task_id=task_id, task=self, args=args, kwargs=kwargs
            )

    def after_attempt(  # noqa: PLR0917 - one attempt's facts, as the hooks take them
        self,
        state: str,
        value: object,
        exc: BaseException | None,
        task_id: str,
        args: Any,
        kwargs: Any,
    ) -> None:
        """Run the hooks and send the signals for one attempt that ended in ``state``.

        In Celery's order: ``on_success`` / ``on_retry`` / ``on_failure``, then the matching
        signal, then ``after_return``, then ``task_postrun``. A raising hook is logged (a
        raising receiver too, by the signal); the task's outcome stands either way.

        Args:
            state: ``SUCCESS``, ``FAILURE`` or ``RETRY``.
            value: The return value (SUCCESS).
            exc: Why it failed or retries (the exception a ``Retry`` carries, not the Retry).
            task_id: The task's id.
            args: Its positional arguments.
            kwargs: Its keyword arguments.
        """
        if not self.has_hooks and not signals.any_task_receivers():
            return
        einfo = ExceptionInfo(exc) if exc is not None else None
        retval = value if state == "SUCCESS" else exc
        try:
            if state == "SUCCESS":
                self.on_success(value, task_id, args, kwargs)
            elif exc is not None and einfo is not None and state == "RETRY":
                self.on_retry(exc, task_id, args, kwargs, einfo)
            elif exc is not None and einfo is not None and state == "FAILURE":
                self.on_failure(exc, task_id, args, kwargs, einfo)
        except Exception:  # the user's hook: the task's outcome stands whatever it does
            logger.exception("a hook of task %s[%s] failed", self.name, task_id)
        if state == "SUCCESS":
            signals.task_success.send(sender=self, result=value)
        elif state == "RETRY":
            request = current_request()
            signals.task_retry.send(sender=self, request=request, reason=exc, einfo=einfo)
        elif state == "FAILURE":
            signals.task_failure.send(
                sender=self,
                task_id=task_id,
                exception=exc,
                args=args,
                kwargs=kwargs,
                traceback=exc.__traceback__ if exc is not None else None,
                einfo=einfo,
            )
        try:
            self.after_return(state, retval, task_id, args, kwargs, einfo)
        except Exception:
            logger.exception("a hook of task %s[%s] failed", self.name, task_id)
        signals.task_postrun.send(
            sender=self,
            task_id=task_id,
            task=self,
            args=args,
            kwargs=kwargs,
            retval=retval,
            state=state,
        )

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """Called by the worker after the task returned (Celery's hook); override it."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """Called by the worker after the task failed for good (Celery's hook); override it."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """Called by the worker when the task will be retried (Celery's hook); override it."""

    def after_return(  # noqa: PLR0917 - Celery's signature
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: ExceptionInfo | None,
    ) -> None:
        """Called by the worker after every attempt, after the other hooks; override it."""

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, synchronously, like calling the function (no broker involved).

        ``self.request`` inside the task describes a direct call (``called_directly=True``);
        ``update_state`` and ``heartbeat`` do nothing. An ``async def`` task returns its coroutine.
        """
        request = Request(id=str(uuid.uuid4()), name=self.name, called_directly=True)
        call_args = (self, *args) if self.options.bind else args
        if inspect.iscoroutinefunction(self.run):
            return self._run_coroutine_directly(request, call_args, kwargs)
        with executing(request, DirectCallReporter()):
            return self.run(*call_args, **kwargs)

    async def _run_coroutine_directly(
        self, request: Request, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # The context must be set while the coroutine runs, not when it is created.
        with executing(request, DirectCallReporter()):
            coroutine: Awaitable[Any] = self.run(*args, **kwargs)
            return await coroutine

    def apply(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        retries: int = 0,
        throw: bool | None = None,
        headers: Mapping[str, str] | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run the task here and now, with its retries and hooks, as Celery's ``apply`` does.

        No broker is involved (see :mod:`client.eager`). Other ``apply_async`` options are
        accepted and have no effect, since nothing is queued.

        Returns:
            An already finished result; ``get()`` returns the value or raises the failure.
        """
        from client.eager import apply

        return apply(
            self,
            args,
            kwargs,
            task_id=task_id,
            retries=retries,
            throw=throw,
            headers=headers,
            max_retries=max_retries,
        )

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task to a worker with these arguments; shortcut for ``apply_async``.

        Returns:
            The result handle.
        """
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Like :meth:`delay`, for callers inside an event loop (never blocks the loop)."""
        return await self.aapply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task to a worker.

        Args:
            args: Positional arguments.
            kwargs: Keyword arguments.
            **options: Per-call options: ``task_id``, ``queue``, ``countdown``, ``eta``,
                ``expires``, ``priority`` (0..9, 9 first), ``time_limit``, ``soft_time_limit``,
                ``headers``, ``idempotency_key``, ``idempotency_window``, ``ignore_result``,
                ``result_ttl``, ``serializer``, ``max_retries``. See
                :class:`client.options.CallOptions`.

        Returns:
            The result handle.

        Raises:
            InvalidTaskSpec: An option is invalid (e.g. negative countdown).
            SerializationError: An argument cannot be encoded; nothing was sent.
            BrokerUnavailable: The broker could not be reached in time.
        """
        if self.app.config.task_always_eager:
            return self._apply_eagerly(args, kwargs, options)
        return self.app.send_task(self.name, args, kwargs, **options)

    async def aapply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Like :meth:`apply_async`, for callers inside an event loop."""
        if self.app.config.task_always_eager:
            return self._apply_eagerly(args, kwargs, options)
        return await self.app.asend_task(self.name, args, kwargs, **options)

    def _apply_eagerly(
        self,
        args: tuple[Any, ...] | list[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> EagerResult:
        """``task_always_eager``: the call's options are checked as if sent, then it runs here."""
        from client.options import CallOptions, resolve_options

        call = CallOptions.parse(options)
        resolve_options(self.name, call, task=self.options, config=self.app.config)
        return self.apply(
            args, kwargs, task_id=call.task_id, headers=call.headers, max_retries=call.max_retries
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """Return a signature: this task with (partial) arguments, to send later or in a group."""
        from client.canvas import Signature

        return Signature(self.app, self.name, args, kwargs)

    def replace(self, sig: Any) -> NoReturn:
        """Hand this running task's place to ``sig`` (a signature, chain, chord or group).

        ``sig`` is sent now and this task ends without a result of its own: the broker gives it
        the replacement's outcome (state, result, error) once that finishes, so ``get()`` on
        this task, the next link of its chain and its chord see the replacement's result. A
        group becomes a chord whose body is ``celery.accumulate``, as in Celery: the result is
        the list of the members' results. Write ``raise self.replace(sig)`` or ``return
        self.replace(sig)``: it raises :class:`~client.errors.Replaced` either way, which the
        worker reports.

        Raises:
            OutsideTaskError: Not called from inside a running task.
            InvalidTaskSpec: ``sig`` ends in a group inside a chain (it has no one result to
                take; nothing is sent), or the task runs eagerly (a replacement needs the
                broker).
        """
        from client.canvas import chord, group
        from client.workflow import send

        if self.request.is_eager:
            raise InvalidTaskSpec("Task.replace needs a broker: it is not available eagerly")
        if isinstance(sig, group):
            sig = chord(sig, self.app.signature(ACCUMULATE, kwargs={"index": 0}))
        raise Replaced(send(self.app, sig, one_result="Task.replace").id)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a workflow it ignores its parent's result (Celery's .si)."""
        from client.canvas import Signature

        return Signature(self.app, self.name, args, kwargs, immutable=True)

    def signature(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """Return a signature with arguments and per-call options."""
        from client.canvas import Signature

        return Signature(self.app, self.name, args or (), kwargs or {}, options)

    @property
    def request(self) -> Request:
        """The context of the task running now (id, retries, headers, ...).

        Raises:
            OutsideTaskError: No task is running in this context.
        """
        request = current_request()
        if request is None:
            raise OutsideTaskError(f"{self.name}.request is only available while a task runs")
        return request

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Ask the worker to run this task again later; never returns.

        The retry waits at the broker, not in the worker. When no retries are left the worker
        reports ``exc`` (if given) as the task's final error.

        Args:
            exc: The exception that made the task retry.
            countdown: Seconds until the next attempt; default is the task's retry policy.
            eta: When to run the next attempt (overrides ``countdown``).
            max_retries: Overrides the task's ``max_retries`` for this decision.

        Raises:
            Retry: Always; let it propagate out of the task.
        """
        if countdown is not None and countdown < 0:
            raise InvalidTaskSpec(f"retry countdown must be >= 0 seconds, got {countdown}")
        raise Retry(exc=exc, countdown=countdown, eta=eta, max_retries=max_retries) from exc

    def update_state(self, state: str, meta: Mapping[str, object] | None = None) -> None:
        """Publish a custom state (e.g. ``"PROGRESS"``) that clients read as ``result.state``.

        Args:
            state: The state's name.
            meta: Data clients read as ``result.info`` (must be serializable).

        Raises:
            OutsideTaskError: No task is running in this context.
        """
        self._reporter("update_state").update_state(state, dict(meta) if meta else {})

    def heartbeat(self, progress: object = None, extend: float | None = None) -> None:
        """Tell the broker the task is alive, extending its lease; optionally report progress.

        Args:
            progress: A serializable value clients can read while the task runs.
            extend: Seconds to extend the lease by; None uses the worker's default.

        Raises:
            OutsideTaskError: No task is running in this context.
        """
        self._reporter("heartbeat").heartbeat(progress, extend)

    def retry_delay_for(self, retries: int, *, rng: random.Random | None = None) -> float:
        """Return the countdown, in seconds, before automatic retry number ``retries + 1``.

        With ``retry_backoff`` the delay is ``base * 2**retries`` capped at ``retry_backoff_max``
        and, with ``retry_jitter``, drawn uniformly from ``[0, delay]``; otherwise it is
        ``default_retry_delay``.

        Args:
            retries: Retries that already happened (0 before the first retry).
            rng: Random source for the jitter (tests pass a seeded one).
        """
        backoff = self.options.retry_backoff
        if backoff is False or not backoff:
            return float(self.options.default_retry_delay)
        base = 1.0 if backoff is True else float(backoff)
        # Cap the exponent too, so a task retried forever cannot overflow the float.
        delay = min(base * 2.0 ** min(retries, 64), float(self.options.retry_backoff_max))
        if self.options.retry_jitter:
            delay = (rng or random).uniform(0, delay)
        return delay

    def _reporter(self, method: str) -> TaskReporter:
        reporter = current_reporter()
        if reporter is None:
            raise OutsideTaskError(f"{self.name}.{method}() can only be called while the task runs")
        return reporter
