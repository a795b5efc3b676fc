"""Protobuf messages <-> the plain records of ``client.records``; the client's only codec.

The transport sends what this module builds and hands back what it reads, so no other module
sees a protobuf type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from celeriac.v1 import client_pb2, tasks_pb2
from client import states
from client.periodic import PeriodicEntry
from client.records import (
    EncodedValue,
    RemoteError,
    ResolvedOptions,
    ResultRecord,
    ServerInfo,
    SubmitSpec,
    Submitted,
)

_UINT32_MAX = 2**32 - 1

STATES = {
    tasks_pb2.TASK_STATE_UNKNOWN: states.UNKNOWN,
    tasks_pb2.TASK_STATE_PENDING: states.PENDING,
    tasks_pb2.TASK_STATE_STARTED: states.STARTED,
    tasks_pb2.TASK_STATE_RETRY: states.RETRY,
    tasks_pb2.TASK_STATE_SUCCESS: states.SUCCESS,
    tasks_pb2.TASK_STATE_FAILURE: states.FAILURE,
    tasks_pb2.TASK_STATE_REVOKED: states.REVOKED,
}

REVOKE_OUTCOMES = {
    client_pb2.REVOKE_OUTCOME_REVOKED: "revoked",
    client_pb2.REVOKE_OUTCOME_CANCEL_SENT: "cancel-sent",
    client_pb2.REVOKE_OUTCOME_ALREADY_FINISHED: "already-finished",
    client_pb2.REVOKE_OUTCOME_UNKNOWN: "unknown",
}


def revoke_outcomes(reply: client_pb2.RevokeResponse) -> list[str]:
    """One outcome name per revoked id, in request order."""
    return [REVOKE_OUTCOMES.get(outcome, "unknown") for outcome in reply.outcomes]


def ms(seconds: float | None) -> int:
    """Seconds to whole milliseconds for a uint32 field, rounding up so 0.0001 s is not 'unset'."""
    if not seconds or seconds <= 0:
        return 0
    return min(math.ceil(seconds * 1000), _UINT32_MAX)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(UTC))
    return stamp


def _datetime(message: tasks_pb2.TaskResult, field: str) -> datetime | None:
    if not message.HasField(field):  # type: ignore[arg-type]
        return None
    stamp: Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def submit_request(spec: SubmitSpec) -> client_pb2.SubmitRequest:
    """The request submitting one task."""
    request = client_pb2.SubmitRequest()
    _fill_spec(request.task, spec, _options_message(spec.options))
    return request


def submit_many_request(specs: Sequence[SubmitSpec]) -> client_pb2.SubmitManyRequest:
    """The request submitting a batch of tasks.

    Specs sharing one :class:`ResolvedOptions` object (a group sent alike) share its encoding:
    the options are encoded once and copied, which costs far less than building each field.
    """
    request = client_pb2.SubmitManyRequest()
    tasks = request.tasks
    encoded: dict[int, tasks_pb2.TaskSpec] = {}  # by id(): the specs keep their options alive
    for spec in specs:
        options = encoded.get(id(spec.options))
        if options is None:
            options = encoded[id(spec.options)] = _options_message(spec.options)
        _fill_spec(tasks.add(), spec, options)
    return request


def _fill_spec(message: tasks_pb2.TaskSpec, spec: SubmitSpec, options: tasks_pb2.TaskSpec) -> None:
    message.CopyFrom(options)
    message.task_id = spec.task_id
    message.args.content_type = spec.args.content_type
    message.args.body = spec.args.body
    if spec.depends_on:
        message.depends_on.extend(spec.depends_on)
    if spec.dependency_mode:
        message.dependency_mode = _MODES[spec.dependency_mode]


_MODES = {
    "ignore": tasks_pb2.DEPENDENCY_MODE_IGNORE,
    "result": tasks_pb2.DEPENDENCY_MODE_RESULT,
    "results": tasks_pb2.DEPENDENCY_MODE_RESULTS,
    "errback": tasks_pb2.DEPENDENCY_MODE_ERRBACK,
    "barrier": tasks_pb2.DEPENDENCY_MODE_BARRIER,
}


def _options_message(options: ResolvedOptions) -> tasks_pb2.TaskSpec:
    """A spec carrying everything but the task id and the argument body."""
    message = tasks_pb2.TaskSpec(
        name=options.name,
        queue=options.queue,
        priority=options.priority,
        time_limit_ms=ms(options.time_limit),
        soft_time_limit_ms=ms(options.soft_time_limit),
        idempotency_key=options.idempotency_key,
        idempotency_window_ms=ms(options.idempotency_window),
        ignore_result=options.ignore_result,
        result_ttl_ms=ms(options.result_ttl),
        concurrency_key=options.concurrency_key,
        concurrency_limit=options.concurrency_limit,
    )
    if options.headers:
        message.headers.update(options.headers)
    if options.eta is not None:
        message.eta.CopyFrom(_timestamp(options.eta))
    if options.expires is not None:
        message.expires.CopyFrom(_timestamp(options.expires))
    if options.max_retries is not None:
        message.max_retries = options.max_retries
    return message


def periodic_task(entry: PeriodicEntry) -> tasks_pb2.PeriodicTask:
    """A periodic entry as a worker declares it in its hello (the broker mints each run's id)."""
    task = _options_message(entry.spec.options)
    task.args.content_type = entry.spec.args.content_type
    task.args.body = entry.spec.args.body
    return tasks_pb2.PeriodicTask(
        name=entry.name,
        interval_seconds=entry.interval,
        crontab=entry.crontab,
        timezone=entry.timezone,
        task=task,
        expires_ms=ms(entry.expires),
    )


def submitted(reply: client_pb2.SubmitResponse, watch: object | None = None) -> Submitted:
    """The broker's answer to one submitted task (and the watch on its result, if any)."""
    state = STATES.get(reply.state, states.UNKNOWN)
    return Submitted(reply.task_id, reply.created, state, watch)


def _encoded(message: tasks_pb2.TaskResult, field: str) -> EncodedValue | None:
    if not message.HasField(field):  # type: ignore[arg-type]
        return None
    payload: tasks_pb2.Payload = getattr(message, field)
    if not payload.content_type and not payload.body:
        return None
    return EncodedValue(payload.content_type, payload.body)


# TaskErrorKind numbers to the names RemoteError.kind gives them ("timeout", "user_error", ...).
_ERROR_KINDS = {
    number: name.removeprefix("TASK_ERROR_KIND_").lower()
    for name, number in tasks_pb2.TaskErrorKind.items()
    if number
}


def result_record(message: tasks_pb2.TaskResult) -> ResultRecord:
    """What the broker said about one task."""
    error = None
    if message.HasField("error") and message.error.type:
        error = RemoteError(
            message.error.type, message.error.message, message.error.traceback,
            message.error.retryable, _ERROR_KINDS.get(message.error.kind, ""),
        )  # fmt: skip
    return ResultRecord(
        task_id=message.task_id,
        state=STATES.get(message.state, states.UNKNOWN),
        custom_state=message.custom_state,
        result=_encoded(message, "result"),
        error=error,
        name=message.name,
        queue=message.queue,
        retries=message.retries,
        attempts=message.attempts,
        date_done=_datetime(message, "date_done"),
        eta=_datetime(message, "eta"),
        worker_id=message.worker_id,
        dead_lettered=message.dead_lettered,
        progress=_encoded(message, "progress"),
        depends_on=tuple(message.depends_on),
    )


def server_info(reply: client_pb2.ServerInfoResponse) -> ServerInfo:
    """The broker's version and limits."""
    return ServerInfo(
        version=reply.version,
        protocol=reply.protocol,
        features=tuple(reply.features),
        max_payload_bytes=reply.max_payload_bytes,
        max_batch=reply.max_batch,
        max_wait=reply.max_wait_ms / 1000,
        uptime=reply.uptime_seconds,
        max_message_bytes=reply.max_message_bytes,
    )
