"""From a call (``apply_async(args, kwargs, **options)``) to a resolved, encoded ``SubmitSpec``.

Every per-call option is checked here, before anything is sent, so a bad countdown or an
unencodable argument fails in the caller's frame with a message that names the problem.

Where an option can come from several places, the most specific wins:
per-call option > ``task_routes`` entry > the task's own options > the app's defaults.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from client.config import ClientConfig
from client.errors import InvalidTaskSpec
from client.ids import new_task_id
from client.records import EncodedValue, ResolvedOptions, SubmitSpec
from client.serialization import content_type_for, encode_args
from client.task import TaskOptions, check_concurrency_limit, check_priority


@dataclass(frozen=True)
class CallOptions:
    """The options one call may pass to ``apply_async``, ``send_task`` or a signature.

    Attributes:
        task_id: Use this id instead of a fresh UUID; resubmitting a known id returns that task.
        queue: Queue for this call (beats routes and task options).
        countdown: Seconds from now before the task may run; must be >= 0.
        eta: Time before which the task does not run. Naive datetimes are taken as UTC.
        expires: Seconds from now, or a datetime, after which the task no longer starts.
        priority: 0..9 within the queue; 9 runs first, 0 is the default.
        time_limit: Hard limit in seconds for each attempt.
        soft_time_limit: Soft limit in seconds (``SoftTimeLimitExceeded`` in the task).
        headers: String metadata passed to the worker untouched (trace context, caller id).
        idempotency_key: Repeated submits with this key within the window return the first task.
        idempotency_window: Seconds the key is remembered (broker default if None).
        ignore_result: Keep only the final state, not the return value.
        result_ttl: Seconds the result is kept after the task finishes.
        serializer: ``"json"`` (default), ``"pickle"`` (needs ``allow_pickle``), a content type.
        max_retries: Override the task's ``max_retries`` for this call.
        concurrency_key: The key this call's ``concurrency_limit`` counts against, across all
            workers (e.g. ``f"tenant:{tenant_id}"``); tasks of any name may share a key.
        concurrency_limit: Override the task's ``concurrency_limit`` for this call.
    """

    task_id: str | None = None
    queue: str | None = None
    countdown: float | None = None
    eta: datetime | None = None
    expires: float | datetime | None = None
    priority: int | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    idempotency_window: float | None = None
    ignore_result: bool | None = None
    result_ttl: float | None = None
    serializer: str | None = None
    max_retries: int | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> CallOptions:
        """Build call options from keyword arguments, naming any unknown ones.

        Celery's publishing options are taken where they mean something here: ``routing_key``
        is the queue name (what it is with Redis and the default direct exchange; ``queue``
        wins when both are given), and ``retry``/``retry_policy`` are accepted because every
        send already retries the connection until the app's ``connect_timeout``. Options
        Celeriac does not offer are refused by name, with the reason.

        Raises:
            InvalidTaskSpec: An option name is unknown or not supported.
        """
        if not options:
            return NO_CALL_OPTIONS
        refused = sorted(set(options) & set(UNSUPPORTED_CALL_OPTIONS))
        if refused:
            name = refused[0]
            raise InvalidTaskSpec(
                f"option {name!r} is not supported: {UNSUPPORTED_CALL_OPTIONS[name]}"
            )
        unknown = sorted(set(options) - _CALL_OPTION_NAMES - _CELERY_PUBLISH_OPTIONS)
        if unknown:
            known = ", ".join(sorted(_CALL_OPTION_NAMES | _CELERY_PUBLISH_OPTIONS))
            raise InvalidTaskSpec(f"unknown task option(s) {', '.join(unknown)}; known: {known}")
        values = {k: v for k, v in options.items() if v is not None and k in _CALL_OPTION_NAMES}
        routing_key = options.get("routing_key")
        if routing_key is not None and "queue" not in values:
            values["queue"] = routing_key
        return cls(**values)


_CALL_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(CallOptions))
# Celery's apply_async options that mean something here without a field of their own.
_CELERY_PUBLISH_OPTIONS = frozenset({"routing_key", "retry", "retry_policy"})
# Celery's apply_async options Celeriac does not offer, and why: refused, never ignored.
UNSUPPORTED_CALL_OPTIONS = {
    "link": "callbacks go with the blocking API (apply_async, send_task), not the asyncio one",
    "link_error": (
        "error callbacks go with the blocking API (apply_async, send_task), not the asyncio one"
    ),
    "exchange": "Celeriac has no exchanges: it routes by queue (pass queue= or routing_key=)",
    "shadow": "renaming a task in logs is not supported",
    "add_to_parent": "results do not track their children",
    "producer": "Celeriac sends through the app's own connection",
    "connection": "Celeriac sends through the app's own connection",
}
# A call without options is the common case; the instance is frozen, so one can be shared.
NO_CALL_OPTIONS = CallOptions()
# What a task sent by name (not registered here) runs with.
DEFAULT_TASK_OPTIONS = TaskOptions()


def build_spec(
    name: str,
    args: Sequence[object] | None,
    kwargs: Mapping[str, object] | None,
    call: CallOptions,
    *,
    task: TaskOptions | None,
    config: ClientConfig,
    now: datetime | None = None,
) -> SubmitSpec:
    """Resolve options and encode arguments for one task.

    Args:
        name: Registered task name.
        args: Positional arguments.
        kwargs: Keyword arguments.
        call: Per-call options.
        task: The task's declared options, when the task is known locally.
        config: The app's configuration (routes, default queue, pickle policy).
        now: The current time (tests pass a fixed one).

    Returns:
        The spec to submit.

    Raises:
        InvalidTaskSpec: An option is invalid; the message says which and why.
        SerializationError: An argument cannot be encoded.
        ContentTypeRefused: Pickle was asked for but the app does not allow it.
    """
    options = resolve_options(name, call, task=task, config=config, now=now)
    task_id = new_task_id() if call.task_id is None else _task_id(call.task_id)
    return encode_spec(options, args, kwargs, allow_pickle=config.allow_pickle, task_id=task_id)


def resolve_options(
    name: str,
    call: CallOptions,
    *,
    task: TaskOptions | None,
    config: ClientConfig,
    now: datetime | None = None,
) -> ResolvedOptions:
    """Resolve everything about a submission except its id and arguments.

    Arguments and keywords are as for :func:`build_spec`; ``call.task_id`` is not used here.

    Raises:
        InvalidTaskSpec: An option is invalid; the message says which and why.
        ContentTypeRefused: The serializer is unknown.
    """
    if not name:
        raise InvalidTaskSpec("task name must not be empty")
    serializer = call.serializer or (task.serializer if task else config.task_serializer)
    task = task or DEFAULT_TASK_OPTIONS
    now = now or datetime.now(UTC)
    route = route_for(name, config.task_routes)
    priority = _first(call.priority, route.get("priority"), task.priority, 0)
    return ResolvedOptions(
        name=name,
        queue=str(_first(call.queue, route.get("queue"), task.queue, config.default_queue)),
        headers=_headers(call.headers),
        priority=check_priority(priority),
        eta=resolve_eta(call.countdown, call.eta, now),
        expires=resolve_expires(_first(call.expires, task.expires), now),
        time_limit=_seconds("time_limit", _first(call.time_limit, task.time_limit)),
        soft_time_limit=_seconds(
            "soft_time_limit", _first(call.soft_time_limit, task.soft_time_limit)
        ),
        idempotency_key=call.idempotency_key or "",
        idempotency_window=_seconds("idempotency_window", call.idempotency_window),
        ignore_result=bool(_first(call.ignore_result, task.ignore_result)),
        result_ttl=_seconds("result_ttl", _first(call.result_ttl, task.result_ttl)),
        max_retries=_max_retries(call.max_retries),
        content_type=content_type_for(serializer),
        **_concurrency(call, task),
    )


def encode_spec(
    options: ResolvedOptions,
    args: Sequence[object] | None,
    kwargs: Mapping[str, object] | None,
    *,
    allow_pickle: bool,
    task_id: str | None = None,
) -> SubmitSpec:
    """Encode one task's arguments under already resolved options.

    Args:
        options: The resolved options (shared by every task of a group sent alike).
        args: Positional arguments.
        kwargs: Keyword arguments.
        allow_pickle: Whether the app allows pickle.
        task_id: The task's id; a fresh UUID4 when None.

    Raises:
        SerializationError: An argument cannot be encoded.
        ContentTypeRefused: Pickle was asked for but the app does not allow it.
    """
    content_type = options.content_type
    body = encode_args(args or (), kwargs or {}, content_type, allow_pickle=allow_pickle)
    return SubmitSpec(task_id or new_task_id(), EncodedValue(content_type, body), options)


def route_for(name: str, routes: Mapping[str, Mapping[str, Any] | str]) -> Mapping[str, Any]:
    """Return the route options for a task name: an exact entry, else the first matching glob.

    A route given as a plain string is a queue name.
    """
    route = routes.get(name)
    if route is None:
        route = next(
            (value for pattern, value in routes.items() if fnmatch.fnmatchcase(name, pattern)), {}
        )
    return {"queue": route} if isinstance(route, str) else route


def resolve_eta(countdown: float | None, eta: datetime | None, now: datetime) -> datetime | None:
    """Turn ``countdown`` (seconds from ``now``) or ``eta`` into an aware UTC datetime.

    Raises:
        InvalidTaskSpec: Both are given, or countdown is negative or not a finite number.
    """
    if countdown is not None and eta is not None:
        raise InvalidTaskSpec("give countdown or eta, not both")
    if countdown is not None:
        return now + timedelta(seconds=_seconds("countdown", countdown, allow_zero=True) or 0.0)
    return None if eta is None else as_utc(eta, "eta")


def resolve_expires(expires: object, now: datetime) -> datetime | None:
    """Turn ``expires`` (seconds from ``now``, or a datetime) into an aware UTC datetime.

    Raises:
        InvalidTaskSpec: Seconds are not positive, or the value is neither number nor datetime.
    """
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return as_utc(expires, "expires")
    return now + timedelta(seconds=_seconds("expires", expires) or 0.0)


def as_utc(moment: object, option: str) -> datetime:
    """Return an aware UTC datetime; a naive one is taken to be in UTC already.

    Raises:
        InvalidTaskSpec: ``moment`` is not a datetime.
    """
    if not isinstance(moment, datetime):
        raise InvalidTaskSpec(f"{option} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _seconds(option: str, value: object, *, allow_zero: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidTaskSpec(f"{option} must be a number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidTaskSpec(f"{option} must be {bound} seconds, got {value}")
    return float(value)


def _first(*candidates: Any) -> Any:
    for value in candidates:
        if value is not None:
            return value
    return None


def _task_id(task_id: object) -> str:
    if not isinstance(task_id, str) or not task_id:
        raise InvalidTaskSpec(f"task_id must be a non-empty string, got {task_id!r}")
    return task_id


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTaskSpec(
                f"headers must map str to str; got {key!r}: {type(value).__name__}"
            )
    return dict(headers)


def _concurrency(call: CallOptions, task: TaskOptions) -> dict[str, Any]:
    limit = check_concurrency_limit(_first(call.concurrency_limit, task.concurrency_limit))
    key = call.concurrency_key or ""
    if key and limit is None:
        raise InvalidTaskSpec(
            f"concurrency_key {key!r} needs a concurrency_limit (a task option, or this call's)"
        )
    if not isinstance(key, str):
        raise InvalidTaskSpec(f"concurrency_key must be a string, got {key!r}")
    return {"concurrency_key": key, "concurrency_limit": limit or 0}


def _max_retries(max_retries: object) -> int | None:
    if max_retries is None:
        return None
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidTaskSpec(f"max_retries must be an int >= 0, got {max_retries!r}")
    return max_retries
