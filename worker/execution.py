"""Run one job: decode its arguments, call the task, and turn what happens into an `Outcome`.

This module is the worker's semantics in one place, with no gRPC and no pool in it: every pool
calls `execute` (or `execute_async` for coroutines on the worker's own loop) and sends the
`Outcome` on. Retry decisions follow Celery's rules:

* `self.retry(...)` raises `client.errors.Retry`: retry after its countdown/eta, or the task's
  `default_retry_delay`.
* An exception matching the task's `autoretry_for` and not its `dont_autoretry_for` is retried
  after `task.retry_delay_for(retries)` (backoff, cap and jitter come from the task options).
* The retry limit is `retry(max_retries=)`, else the caller's per-call limit, else the task's
  `max_retries` (None retries forever). Once reached, the original exception is the failure.
  For `autoretry_for` retries, the task's `retry_kwargs` may set `max_retries` and `countdown`.

Around each attempt, in the process that runs it and with its request current: `task_prerun`
before; after, a failure is logged (ERROR with the traceback, or one INFO line for the task's
expected `throws` types), then `Task.after_attempt` runs a class-based task's hooks and sends
the task signals (client.signals).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from client import serialization, signals
from client.context import Request, executing
from client.errors import (
    NotRegistered,
    Replaced,
    Retry,
    TaskExpired,
    TaskRevokedError,
    TimeLimitExceeded,
)
from client.task import Task
from worker.errors import WorkerLostError
from worker.jobs import (
    Heartbeat,
    Job,
    Outcome,
    OutcomeState,
    Payload,
    StateUpdate,
    TaskErrorInfo,
    TaskEvent,
)
from worker.limits import check_result, fit_event
from worker.parents import with_parents
from worker.task_threads import TaskThreads

logger = logging.getLogger(__name__)

EventSink = Callable[[TaskEvent], None]


@dataclass(frozen=True)
class ExecutionSettings:
    """What execution needs to know about the worker running it.

    Attributes:
        hostname: The worker id, exposed to tasks as `self.request.hostname`.
        allow_pickle: Whether pickled arguments are accepted and results may be pickled.
    """

    hostname: str
    allow_pickle: bool = False


@dataclass(frozen=True)
class _Call:
    task: Task
    args: list[object]
    kwargs: dict[str, object]


def resolve_limits(
    job: Job,
    tasks: Mapping[str, Task],
    default_time_limit: float | None,
    default_soft_time_limit: float | None,
) -> Job:
    """Fill in the job's time limits: the call's, else the task's options, else the worker's.

    Args:
        job: The job as assigned (limits set only when the call set them).
        tasks: The task registry.
        default_time_limit: The worker's `--time-limit`.
        default_soft_time_limit: The worker's `--soft-time-limit`.

    Returns:
        The job with effective limits.
    """
    task = tasks.get(job.name)
    options = task.options if task is not None else None
    hard = job.time_limit or (options.time_limit if options else None) or default_time_limit
    soft = (
        job.soft_time_limit
        or (options.soft_time_limit if options else None)
        or default_soft_time_limit
    )
    hard, soft = hard or None, soft or None
    if hard == job.time_limit and soft == job.soft_time_limit:
        return job  # the usual case; `replace` costs more than anything else on this path
    return replace(job, time_limit=hard, soft_time_limit=soft)


def execute(
    job: Job,
    tasks: Mapping[str, Task],
    sink: EventSink,
    settings: ExecutionSettings,
    *,
    now: datetime | None = None,
) -> Outcome:
    """Run one job in the calling thread; an `async def` task runs on a fresh event loop.

    Args:
        job: The job to run.
        tasks: The task registry (name → Task).
        sink: Receives the task's state updates and heartbeats.
        settings: The worker's execution settings.
        now: The current time (injected by tests); expiry is checked against it.

    Returns:
        The outcome. Task exceptions never escape; they become FAILURE or RETRY outcomes.
    """
    prepared = _prepare(job, tasks, settings, now)
    if isinstance(prepared, Outcome):
        return prepared
    with executing(request_for(job, settings), _Reporter(job, prepared.task, sink, settings)):
        prepared.task.before_attempt(job.task_id, prepared.args, prepared.kwargs)
        try:
            value = _invoke(prepared)
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
        except (Exception, SystemExit) as exc:
            return _after_attempt(job, prepared, decide_failure(job, prepared.task, exc), exc)
        outcome = _success(job, prepared.task, value, settings)
        _run_hooks(job, prepared, outcome, value, None)
    return outcome


async def execute_async(
    job: Job,
    tasks: Mapping[str, Task],
    sink: EventSink,
    settings: ExecutionSettings,
    *,
    now: datetime | None = None,
    threads: TaskThreads | None = None,
) -> Outcome:
    """Run one job on the running event loop: coroutines are awaited, sync tasks use a thread.

    Cancelling the awaiting asyncio task cancels the coroutine (`asyncio.CancelledError`
    propagates to the caller, which reports the job as revoked).

    Args:
        job: The job to run.
        tasks: The task registry.
        sink: Receives the task's state updates and heartbeats (called on this loop, or from
            the task's thread for sync tasks; it must be thread-safe then).
        settings: The worker's execution settings.
        now: The current time (injected by tests).
        threads: Where sync tasks run (default: a new thread per job).

    Returns:
        The outcome.
    """
    prepared = _prepare(job, tasks, settings, now)
    if isinstance(prepared, Outcome):
        return prepared
    with executing(request_for(job, settings), _Reporter(job, prepared.task, sink, settings)):
        prepared.task.before_attempt(job.task_id, prepared.args, prepared.kwargs)
        try:
            if inspect.iscoroutinefunction(prepared.task.run):
                value = await _invoke(prepared)  # type: ignore[misc]
            else:
                value = await _in_thread(_invoke, prepared, threads or TaskThreads(0))
                if inspect.isawaitable(value):
                    value = await value
        except (Exception, SystemExit) as exc:
            return _after_attempt(job, prepared, decide_failure(job, prepared.task, exc), exc)
        outcome = _success(job, prepared.task, value, settings)
        _run_hooks(job, prepared, outcome, value, None)
    return outcome


def decide_failure(job: Job, task: Task, exc: BaseException) -> Outcome:
    """Turn an exception raised by a task into a RETRY or FAILURE outcome.

    Args:
        job: The job that raised.
        task: Its task.
        exc: The exception (`client.errors.Retry` for `self.retry()`).

    Returns:
        RETRY when a retry was asked for (explicitly or through `autoretry_for`) and retries
        remain; FAILURE otherwise, carrying the original exception.
    """
    if isinstance(exc, Replaced):
        return Outcome(job.lease_id, OutcomeState.SUCCESS, replaced_by=exc.task_id)
    options = task.options
    if isinstance(exc, Retry):
        limit = exc.max_retries if exc.max_retries is not None else _retry_limit(job, task)
        cause: BaseException = exc.exc if exc.exc is not None else exc
        if _exhausted(job, limit):
            return failure(job.lease_id, cause, retryable=False)
        countdown = None if exc.eta else exc.countdown
        if countdown is None and exc.eta is None:
            countdown = options.default_retry_delay
        return Outcome(
            lease_id=job.lease_id,
            state=OutcomeState.RETRY,
            error=describe(cause),
            retry_countdown=countdown,
            retry_eta=exc.eta,
            max_retries=limit,
        )
    non_retryable = isinstance(exc, options.dont_autoretry_for)
    if options.autoretry_for and isinstance(exc, options.autoretry_for) and not non_retryable:
        limit = options.retry_kwargs.get("max_retries", _retry_limit(job, task))
        if not _exhausted(job, limit):
            countdown = options.retry_kwargs.get("countdown")
            return Outcome(
                lease_id=job.lease_id,
                state=OutcomeState.RETRY,
                error=describe(exc),
                retry_countdown=task.retry_delay_for(job.retries)
                if countdown is None
                else countdown,
                max_retries=limit,
            )
    return failure(job.lease_id, exc, retryable=not non_retryable)


def lost_outcome(job: Job, tasks: Mapping[str, Task], reason: str) -> Outcome:
    """The outcome of a job whose child process died under it.

    A lost child is treated like a lost worker: the task runs again at once while its retries
    last (counted against its retry limit, so a task that always crashes its process ends),
    then fails with `WorkerLostError`.

    Args:
        job: The job that was running.
        tasks: The task registry (for the retry limit).
        reason: What happened, e.g. "child process 123 exited with signal SIGKILL".

    Returns:
        RETRY with no delay, or FAILURE once retries are exhausted.
    """
    error = WorkerLostError(reason)
    task = tasks.get(job.name)
    limit = _retry_limit(job, task) if task is not None else job.max_retries
    if task is None or _exhausted(job, limit):
        return failure(job.lease_id, error, retryable=True)
    return Outcome(
        lease_id=job.lease_id,
        state=OutcomeState.RETRY,
        error=describe(error),
        retry_countdown=0.0,
        max_retries=limit,
    )


def time_limit_outcome(job: Job) -> Outcome:
    """The FAILURE recorded when a job runs past its hard time limit and is stopped."""
    error = TimeLimitExceeded(
        f"task {job.name}[{job.task_id}] exceeded its time limit of {job.time_limit}s"
    )
    return failure(job.lease_id, error, retryable=False)


def revoked_outcome(job: Job, reason: str) -> Outcome:
    """The REVOKED outcome of a job cancelled while it ran."""
    error = TaskRevokedError(reason or "revoked")
    return Outcome(
        lease_id=job.lease_id, state=OutcomeState.REVOKED, error=describe(error, retryable=False)
    )


def failure(lease_id: str, exc: BaseException, *, retryable: bool) -> Outcome:
    """A FAILURE outcome carrying `exc` as data."""
    return Outcome(
        lease_id=lease_id, state=OutcomeState.FAILURE, error=describe(exc, retryable=retryable)
    )


def describe(exc: BaseException, *, retryable: bool = True) -> TaskErrorInfo:
    """Describe an exception as data: "module.Qualname", str(exc) and the formatted traceback."""
    kind = type(exc)
    return TaskErrorInfo(
        type=f"{kind.__module__}.{kind.__qualname__}",
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        retryable=retryable,
    )


def _prepare(
    job: Job, tasks: Mapping[str, Task], settings: ExecutionSettings, now: datetime | None
) -> _Call | Outcome:
    """Find the task and decode its arguments, or say why the job cannot run."""
    task = tasks.get(job.name)
    if task is None:
        logger.error("unknown task name=%s id=%s", job.name, job.task_id)
        error = NotRegistered(f"task {job.name!r} is not registered with this worker")
        return failure(job.lease_id, error, retryable=False)
    current = now or datetime.now(UTC)
    if job.expires is not None and job.expires <= current:
        error_expired = TaskExpired(
            f"task {job.name}[{job.task_id}] expired at {job.expires.isoformat()}"
        )
        # REVOKED, as the broker records a task that expires in its queue (and as Celery does).
        announce_revoked(job, task, settings, terminated=False, signum=None, expired=True)
        return Outcome(
            lease_id=job.lease_id,
            state=OutcomeState.REVOKED,
            error=describe(error_expired, retryable=False),
        )
    try:
        args, kwargs = serialization.decode_args(
            job.args.body, job.args.content_type, allow_pickle=settings.allow_pickle
        )
        if job.dependency_mode:
            args = with_parents(job, task, args, settings.allow_pickle)
    except Exception as exc:  # SerializationError or ContentTypeRefused
        return failure(job.lease_id, exc, retryable=False)
    return _Call(task, args, kwargs)


def _after_attempt(job: Job, call: _Call, outcome: Outcome, exc: BaseException) -> Outcome:
    """Log a failure and run the task's hooks for an attempt that raised; returns ``outcome``."""
    if outcome.state is OutcomeState.FAILURE:
        cause = exc.exc if isinstance(exc, Retry) and exc.exc is not None else exc
        if isinstance(cause, call.task.options.throws):
            logger.info("task %s[%s] raised expected: %r", job.name, job.task_id, cause)
        else:
            logger.error(
                "task %s[%s] raised unexpected: %r", job.name, job.task_id, cause, exc_info=cause
            )
    _run_hooks(job, call, outcome, None, exc)
    return outcome


def _run_hooks(
    job: Job, call: _Call, outcome: Outcome, value: object, exc: BaseException | None
) -> None:
    if isinstance(exc, Retry) and exc.exc is not None:
        exc = exc.exc  # the hooks see why the task retried, as in Celery
    state = outcome.state.value
    call.task.after_attempt(state, value, exc, job.task_id, call.args, call.kwargs)


def _invoke(call: _Call) -> object:
    if call.task.options.bind:
        return call.task.run(call.task, *call.args, **call.kwargs)
    return call.task.run(*call.args, **call.kwargs)


async def _in_thread(fn: Callable[[_Call], object], call: _Call, threads: TaskThreads) -> object:
    """Run fn(call) in one of `threads` with this context (so the task sees its request).

    Not `asyncio.to_thread`: a cancelled job's thread may run on for a long time, and threads of
    the loop's default executor would hold up the worker's exit until they end.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[object] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def target() -> None:
        try:
            result, error = context.run(fn, call), None
        except BaseException as exc:  # handed to the awaiting coroutine, which decides
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(settle, result, error)

    threads.run(target)
    return await future


async def _await(value: object) -> object:
    return await value  # type: ignore[misc]


def _success(job: Job, task: Task, value: object, settings: ExecutionSettings) -> Outcome:
    if job.ignore_result or task.options.ignore_result:
        return Outcome(lease_id=job.lease_id, state=OutcomeState.SUCCESS)
    try:
        payload = _encode(value, task, settings)
    except Exception as exc:  # SerializationError or ContentTypeRefused
        return failure(job.lease_id, exc, retryable=False)
    outcome = Outcome(lease_id=job.lease_id, state=OutcomeState.SUCCESS, result=payload)
    if job.max_payload_bytes is None:
        return outcome
    # Checked here, where the result is encoded: in a process-pool child, an oversize body is
    # dropped before it crosses the pipe (the runner checks again, whatever the pool).
    return check_result(job, outcome, job.max_payload_bytes)


def _encode(value: object, task: Task, settings: ExecutionSettings) -> Payload:
    content_type = serialization.content_type_for(task.options.serializer)
    body = serialization.encode(value, content_type, allow_pickle=settings.allow_pickle)
    return Payload(content_type, body)


def _retry_limit(job: Job, task: Task) -> int | None:
    return job.max_retries if job.max_retries is not None else task.options.max_retries


def _exhausted(job: Job, limit: int | None) -> bool:
    return limit is not None and job.retries >= limit


def request_for(job: Job, settings: ExecutionSettings) -> Request:
    """The ``self.request`` of ``job`` (and the ``request`` of its task signals)."""
    return Request(
        id=job.task_id,
        name=job.name,
        retries=job.retries,
        attempt=job.attempt,
        queue=job.queue,
        eta=job.eta,
        expires=job.expires,
        headers=job.headers,
        lease_id=job.lease_id,
        hostname=settings.hostname,
        time_limit=job.time_limit,
        soft_time_limit=job.soft_time_limit,
        max_retries=job.max_retries,
        delivery_info={
            "exchange": "",
            "routing_key": job.queue,
            "priority": job.priority,
            "redelivered": job.attempt > 1,
        },
    )


def announce_revoked(
    job: Job,
    task: Task | None,
    settings: ExecutionSettings,
    *,
    terminated: bool,
    signum: int | None,
    expired: bool,
) -> None:
    """Send ``task_revoked`` for ``job`` (nothing to build when no receiver is connected)."""
    if signals.task_revoked.receivers:
        signals.task_revoked.send(
            sender=task,
            request=request_for(job, settings),
            terminated=terminated,
            signum=signum,
            expired=expired,
        )


class _Reporter:
    """The running task's `client.context.TaskReporter`: encodes and forwards its events.

    An event whose payload is over the job's `max_payload_bytes` is cut down or dropped with a
    warning (`worker.limits.fit_event`): the task itself goes on.
    """

    def __init__(self, job: Job, task: Task, sink: EventSink, settings: ExecutionSettings) -> None:
        self._job = job
        self._task = task
        self._sink = sink
        self._settings = settings

    def update_state(self, state: str, meta: object) -> None:
        payload = _encode(meta, self._task, self._settings)
        self._send(StateUpdate(self._job.lease_id, state, payload))

    def heartbeat(self, progress: object, extend: float | None) -> None:
        payload = None if progress is None else _encode(progress, self._task, self._settings)
        self._send(Heartbeat(self._job.lease_id, extend, payload))

    def _send(self, event: TaskEvent) -> None:
        limit = self._job.max_payload_bytes
        fitted = event if limit is None else fit_event(event, limit)
        if fitted is not None:
            self._sink(fitted)
