"""Protobuf <-> core conversions; the only module where both kinds of value meet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from sys import intern
from typing import TypeVar

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from broker.core.model import (
    DEFAULT_QUEUE,
    NO_HEADERS,
    Assignment,
    Cancel,
    DependencyMode,
    ErrorKind,
    Hello,
    LeaseExtension,
    Outcome,
    ParentOutcome,
    Payload,
    QueueStats,
    Report,
    RevokeOutcome,
    StateUpdate,
    SubmitResult,
    TaskError,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from broker.core.periodic import PeriodicEntry, PeriodicSpec
from broker.core.sessions import Outbox, Session
from broker.errors import InvalidArgument
from celeriac.rates import InvalidRate, parse_rate
from celeriac.v1 import admin_pb2, client_pb2, tasks_pb2, worker_pb2

_STATE_TO_PB = {
    state: tasks_pb2.TaskState.Value(f"TASK_STATE_{state.value}") for state in TaskState
}
_STATE_FROM_PB: dict[int, TaskState] = {number: state for state, number in _STATE_TO_PB.items()}
_REVOKE_TO_PB = {
    RevokeOutcome.REVOKED: client_pb2.REVOKE_OUTCOME_REVOKED,
    RevokeOutcome.CANCEL_SENT: client_pb2.REVOKE_OUTCOME_CANCEL_SENT,
    RevokeOutcome.ALREADY_FINISHED: client_pb2.REVOKE_OUTCOME_ALREADY_FINISHED,
    RevokeOutcome.UNKNOWN: client_pb2.REVOKE_OUTCOME_UNKNOWN,
}


# -- scalars -------------------------------------------------------------------------------


def _time_from_pb(message: Timestamp) -> float:
    return message.seconds + message.nanos / 1e9


def _time_to_pb(seconds: float) -> Timestamp:
    stamp = Timestamp()
    _write_time(stamp, seconds)
    return stamp


def _write_time(target: Timestamp, seconds: float) -> None:
    whole = int(seconds // 1)
    target.seconds = whole
    target.nanos = int((seconds - whole) * 1e9)


def payload_from_pb(message: tasks_pb2.Payload) -> Payload:
    """Convert a wire payload."""
    return Payload(message.content_type, message.body)


def payload_to_pb(payload: Payload) -> tasks_pb2.Payload:
    """Convert a core payload."""
    return tasks_pb2.Payload(content_type=payload.content_type, body=payload.body)


def _write_payload(target: tasks_pb2.Payload, payload: Payload) -> None:
    target.content_type = payload.content_type
    target.body = payload.body


def error_from_pb(message: tasks_pb2.TaskError) -> TaskError:
    """Convert a wire error (an unset or unknown kind is derived from its type)."""
    kind = _KIND_FROM_PB.get(message.kind, ErrorKind.UNSPECIFIED)
    return TaskError(message.type, message.message, message.traceback, message.retryable, kind)


def error_to_pb(error: TaskError) -> tasks_pb2.TaskError:
    """Convert a core error."""
    return tasks_pb2.TaskError(
        type=error.type,
        message=error.message,
        traceback=error.traceback,
        retryable=error.retryable,
        kind=_KIND_TO_PB[error.kind],
    )


_KIND_TO_PB = {
    kind: tasks_pb2.TaskErrorKind.Value(f"TASK_ERROR_KIND_{kind.name}") for kind in ErrorKind
}
_KIND_FROM_PB = {number: kind for kind, number in _KIND_TO_PB.items()}


def state_from_pb(number: int, field: str) -> TaskState:
    """Convert a wire state; raises InvalidArgument for values outside the enum."""
    state = _STATE_FROM_PB.get(number)
    if state is None:
        raise InvalidArgument(f"{field} has unknown TaskState value {number}")
    return state


def state_to_pb(state: TaskState) -> tasks_pb2.TaskState.ValueType:
    """Convert a core state."""
    return _STATE_TO_PB[state]


def revoke_outcome_to_pb(outcome: RevokeOutcome) -> client_pb2.RevokeOutcome.ValueType:
    """Convert what a revoke did."""
    return _REVOKE_TO_PB[outcome]


# -- producers -----------------------------------------------------------------------------


def spec_from_pb(message: tasks_pb2.TaskSpec) -> TaskSpec:
    """Convert a submitted spec; validation happens in the core.

    This runs once per submitted task, so it reads each field once and shares what repeats
    across tasks: names, queues and content types are interned (a million queued tasks hold
    one copy of "default", not a million) and a spec without headers gets the shared empty map.
    """
    args = message.args if message.HasField("args") else None
    return TaskSpec(
        name=intern(message.name),
        task_id=message.task_id,
        queue=intern(message.queue) if message.queue else DEFAULT_QUEUE,
        args=None if args is None else Payload(intern(args.content_type), args.body),
        headers=dict(message.headers) if message.headers else NO_HEADERS,
        priority=message.priority,
        eta=_time_from_pb(message.eta) if message.HasField("eta") else None,
        expires=_time_from_pb(message.expires) if message.HasField("expires") else None,
        time_limit_ms=message.time_limit_ms,
        soft_time_limit_ms=message.soft_time_limit_ms,
        idempotency_key=message.idempotency_key,
        idempotency_window_ms=message.idempotency_window_ms,
        ignore_result=message.ignore_result,
        result_ttl_ms=message.result_ttl_ms,
        max_retries=message.max_retries if message.HasField("max_retries") else None,
        concurrency_key=message.concurrency_key,
        concurrency_limit=message.concurrency_limit,
        depends_on=tuple(message.depends_on) if message.depends_on else (),
        dependency_mode=_mode_from_pb(message.dependency_mode),
    )


def spec_to_pb(spec: TaskSpec) -> tasks_pb2.TaskSpec:
    """Describe a spec (a periodic task's template, for listings)."""
    message = tasks_pb2.TaskSpec(
        task_id=spec.task_id,
        name=spec.name,
        queue=spec.queue,
        headers=dict(spec.headers),
        priority=spec.priority,
        time_limit_ms=spec.time_limit_ms,
        soft_time_limit_ms=spec.soft_time_limit_ms,
        ignore_result=spec.ignore_result,
        result_ttl_ms=spec.result_ttl_ms,
        concurrency_key=spec.concurrency_key,
        concurrency_limit=spec.concurrency_limit,
    )
    if spec.args is not None:
        _write_payload(message.args, spec.args)
    if spec.max_retries is not None:
        message.max_retries = spec.max_retries
    return message


_MODE_FROM_PB: dict[tasks_pb2.DependencyMode.ValueType, DependencyMode] = {
    tasks_pb2.DEPENDENCY_MODE_UNSPECIFIED: DependencyMode.RESULT,
    tasks_pb2.DEPENDENCY_MODE_IGNORE: DependencyMode.IGNORE,
    tasks_pb2.DEPENDENCY_MODE_RESULT: DependencyMode.RESULT,
    tasks_pb2.DEPENDENCY_MODE_RESULTS: DependencyMode.RESULTS,
    tasks_pb2.DEPENDENCY_MODE_ERRBACK: DependencyMode.ERRBACK,
    tasks_pb2.DEPENDENCY_MODE_BARRIER: DependencyMode.BARRIER,
}
_MODE_TO_PB = {mode: number for number, mode in _MODE_FROM_PB.items() if number}


def _mode_from_pb(number: tasks_pb2.DependencyMode.ValueType) -> DependencyMode:
    mode = _MODE_FROM_PB.get(number)
    if mode is None:
        raise InvalidArgument(f"dependency_mode {number} is not a known DependencyMode")
    return mode


def submit_response(result: SubmitResult) -> client_pb2.SubmitResponse:
    """The answer to one submitted task."""
    return client_pb2.SubmitResponse(
        task_id=result.task_id, created=result.created, state=_STATE_TO_PB[result.state]
    )


def submit_many_response(results: list[SubmitResult]) -> client_pb2.SubmitManyResponse:
    """The answers to a batch, in order (added in place: no per-answer message to copy)."""
    response = client_pb2.SubmitManyResponse()
    add = response.results.add
    for result in results:
        add(task_id=result.task_id, created=result.created, state=_STATE_TO_PB[result.state])
    return response


def result_to_pb(record: TaskRecord) -> tasks_pb2.TaskResult:
    """Describe a task for a client."""
    message = tasks_pb2.TaskResult()
    write_result(message, record)
    return message


def write_result(message: tasks_pb2.TaskResult, record: TaskRecord) -> None:
    """Describe a task for a client in ``message`` (a fresh one, e.g. from ``results.add()``).

    Answers carry thousands of these: filling them in place, field by field, skips building a
    temporary message per result and copying it into the answer (2.5x cheaper).
    """
    message.task_id = record.task_id
    message.state = _STATE_TO_PB[record.state]
    message.name = record.spec.name
    message.queue = record.spec.queue
    message.attempts = record.attempts
    if record.custom_state:
        message.custom_state = record.custom_state
    if record.retries:
        message.retries = record.retries
    if record.worker_id:
        message.worker_id = record.worker_id
    if record.dead_lettered:
        message.dead_lettered = True
    if record.result is not None:
        _write_payload(message.result, record.result)
    if record.error is not None:
        message.error.CopyFrom(error_to_pb(record.error))
    if record.date_done is not None:
        _write_time(message.date_done, record.date_done)
    if record.due is not None:
        _write_time(message.eta, record.due)
    if record.progress is not None:
        _write_payload(message.progress, record.progress)
    if record.spec.depends_on:
        message.depends_on.extend(record.spec.depends_on)


def write_unknown(message: tasks_pb2.TaskResult, task_id: str) -> None:
    """Describe an id the broker does not know in ``message``."""
    message.task_id = task_id
    message.state = tasks_pb2.TASK_STATE_UNKNOWN


# -- workers -------------------------------------------------------------------------------


def hello_from_pb(message: worker_pb2.Hello) -> Hello:
    """Convert a worker's Hello."""
    return Hello(
        worker_id=message.worker_id,
        hostname=message.hostname,
        pid=message.pid,
        queues=tuple(message.queues),
        task_names=tuple(message.task_names),
        concurrency=message.concurrency,
        pool=message.pool,
        version=message.version,
        held_lease_ids=tuple(message.held_lease_ids),
        rate_limits=tuple(_rate_from_pb(name, rate) for name, rate in message.rate_limits.items()),
        periodic=tuple(periodic_from_pb(entry) for entry in message.periodic_tasks),
    )


def periodic_from_pb(message: tasks_pb2.PeriodicTask) -> PeriodicSpec:
    """Convert a declared periodic task; the core checks it."""
    return PeriodicSpec(
        name=message.name,
        template=spec_from_pb(message.task),
        interval=message.interval_seconds,
        crontab=message.crontab,
        expires_ms=message.expires_ms,
        timezone=message.timezone,
    )


def periodic_to_pb(entry: PeriodicEntry) -> tasks_pb2.PeriodicTask:
    """Describe a periodic task for a listing."""
    spec = entry.spec
    message = tasks_pb2.PeriodicTask(
        name=spec.name,
        interval_seconds=spec.interval,
        crontab=spec.crontab,
        expires_ms=spec.expires_ms,
        timezone=spec.timezone,
        task=spec_to_pb(spec.template),
    )
    if entry.last_run is not None:
        _write_time(message.last_run, entry.last_run)
    _write_time(message.next_tick, entry.next_tick)
    return message


def rate_override_from_pb(rate: str) -> float:
    """Read SetRateLimitRequest.rate_limit (Celery's forms); raises InvalidArgument."""
    try:
        return parse_rate(rate)
    except InvalidRate as problem:
        raise InvalidArgument(f"SetRateLimitRequest.rate_limit: {problem}") from None


def _rate_from_pb(name: str, rate: str) -> tuple[str, float]:
    try:
        return name, parse_rate(rate)
    except InvalidRate as problem:
        raise InvalidArgument(f"Hello.rate_limits[{name[:140]!r}]: {problem}") from None


def report_from_pb(message: worker_pb2.Report) -> Report:
    """Convert a worker's Report; raises InvalidArgument for malformed outcomes."""
    return Report(
        credit=message.credit,
        started=tuple(message.started_lease_ids),
        outcomes=tuple(_outcome_from_pb(o, i) for i, o in enumerate(message.outcomes)),
        extensions=tuple(
            LeaseExtension(
                e.lease_id,
                e.extend_ms,
                payload_from_pb(e.progress) if e.HasField("progress") else None,
            )
            for e in message.extensions
        ),
        state_updates=tuple(
            StateUpdate(
                u.lease_id, u.state, payload_from_pb(u.meta) if u.HasField("meta") else None
            )
            for u in message.state_updates
        ),
        returned=tuple(message.returned_lease_ids),
        withdraw_credit=message.withdraw_credit,
    )


def _outcome_from_pb(message: worker_pb2.Outcome, index: int) -> Outcome:
    return Outcome(
        lease_id=message.lease_id,
        state=state_from_pb(message.state, f"outcomes[{index}].state"),
        result=payload_from_pb(message.result) if message.HasField("result") else None,
        error=error_from_pb(message.error) if message.HasField("error") else None,
        retry_countdown_ms=message.retry_countdown_ms,
        retry_eta=_time_from_pb(message.retry_eta) if message.HasField("retry_eta") else None,
        max_retries=message.max_retries if message.HasField("max_retries") else None,
        replaced_by=message.replaced_by,
    )


def write_assignment(message: worker_pb2.Assignment, assignment: Assignment) -> None:
    """Describe one assignment for a worker in ``message`` (filled in place, see write_result)."""
    record = assignment.record
    spec = record.spec
    message.lease_id = assignment.lease_id
    message.task_id = record.task_id
    message.attempt = assignment.attempt
    message.name = spec.name
    message.queue = spec.queue
    if record.retries:
        message.retries = record.retries
    if spec.time_limit_ms:
        message.time_limit_ms = spec.time_limit_ms
    if spec.soft_time_limit_ms:
        message.soft_time_limit_ms = spec.soft_time_limit_ms
    if spec.ignore_result:
        message.ignore_result = True
    if spec.priority:
        message.priority = spec.priority
    if spec.headers:
        message.headers.update(spec.headers)
    if record.args is not None:
        _write_payload(message.args, record.args)
    if spec.eta is not None:
        _write_time(message.eta, spec.eta)
    if spec.expires is not None:
        _write_time(message.expires, spec.expires)
    if spec.max_retries is not None:
        message.max_retries = spec.max_retries
    if spec.depends_on:
        _write_dependency(message, record)


def _write_dependency(message: worker_pb2.Assignment, record: TaskRecord) -> None:
    message.dependency_mode = _MODE_TO_PB[record.spec.dependency_mode]
    for parent in record.inputs or ():
        _write_parent(message.parent_results.add(), parent)


def _write_parent(message: tasks_pb2.ParentResult, parent: ParentOutcome) -> None:
    message.task_id = parent.task_id
    message.name = parent.name
    if parent.result is not None:
        _write_payload(message.result, parent.result)
    if parent.error is not None:
        message.error.CopyFrom(error_to_pb(parent.error))


M = TypeVar("M", bound=Message)
P = TypeVar("P", bound=Message)
T = TypeVar("T")

# Bytes a repeated or oneof message field adds around its body: a tag and a length varint.
_FIELD_OVERHEAD = 8


def outbox_to_pb(outbox: Outbox, max_message_bytes: int) -> list[worker_pb2.BrokerMessage]:
    """The messages one outbox becomes: one per kind, assignments and rejections split by size.

    gRPC fails the whole stream when one message exceeds the limit, so assignments and
    rejections go in as many messages as keep each under ``max_message_bytes``.
    """
    budget = max_message_bytes - 2 * _FIELD_OVERHEAD  # the BrokerMessage and Assignments frames
    messages = in_parts(
        outbox.assignments,
        write_assignment,
        budget,
        worker_pb2.BrokerMessage,
        lambda message: message.assignments.tasks,
    )
    acks = outbox.outcome_acks
    if acks and messages and _fits(messages[-1], acks, budget):
        messages[-1].assignments.outcome_acks.extend(acks)  # no message of their own
        acks = []
    for cancel in outbox.cancels:
        messages += _cancel_parts(cancel, budget)
    # A report naming many unknown leases gets as many rejections, each with its reason: larger
    # than the report, so they may need several messages too.
    messages += in_parts(
        outbox.rejections,
        _write_rejection,
        budget,
        worker_pb2.BrokerMessage,
        lambda message: message.rejections.rejections,
    )
    if acks:
        messages += _outcome_ack_parts(acks, budget)
    if outbox.drain is not None:
        messages.append(worker_pb2.BrokerMessage(drain=worker_pb2.Drain(reason=outbox.drain)))
    return messages


def _cancel_parts(cancel: Cancel, budget: int) -> list[worker_pb2.BrokerMessage]:
    """One Cancel message per run of lease ids that fits ``budget`` (a big revoke needs several)."""
    room = budget - len(cancel.reason.encode()) - _FIELD_OVERHEAD  # reason, terminate, frame
    terminate, reason = cancel.terminate, cancel.reason
    return [
        worker_pb2.BrokerMessage(
            cancel=worker_pb2.Cancel(lease_ids=run, terminate=terminate, reason=reason)
        )
        for run in _lease_id_runs(cancel.lease_ids, room)
    ]


def _outcome_ack_parts(lease_ids: list[str], budget: int) -> list[worker_pb2.BrokerMessage]:
    """One OutcomeAcks message per run of lease ids that fits ``budget`` (usually one)."""
    return [
        worker_pb2.BrokerMessage(outcome_acks=worker_pb2.OutcomeAcks(lease_ids=run))
        for run in _lease_id_runs(lease_ids, budget - _FIELD_OVERHEAD)
    ]


def _fits(message: worker_pb2.BrokerMessage, lease_ids: list[str], budget: int) -> bool:
    """Whether ``lease_ids`` can join ``message`` and keep it under ``budget`` bytes."""
    extra = sum(len(lease_id) + _FIELD_OVERHEAD for lease_id in lease_ids)
    return message.ByteSize() + extra <= budget


def _lease_id_runs(lease_ids: Sequence[str], room: int) -> list[list[str]]:
    """``lease_ids`` cut into runs of at most ``room`` bytes on the wire.

    Lease ids are the broker's own ASCII ids, so their length is their size on the wire.
    """
    runs: list[list[str]] = [[]]
    used = 0
    for lease_id in lease_ids:
        cost = len(lease_id) + _FIELD_OVERHEAD
        if runs[-1] and used + cost > room:
            runs.append([])
            used = 0
        runs[-1].append(lease_id)
        used += cost
    return runs


def in_parts(
    items: Sequence[T],
    write: Callable[[M, T], None],
    budget: int,
    new_part: Callable[[], P],
    field: Callable[[P], RepeatedCompositeFieldContainer[M]],
) -> list[P]:
    """The ``new_part()`` messages that carry ``items`` in ``field``, each within ``budget``.

    As many as it takes; see :func:`fill_within` for how each is filled.
    """
    parts: list[P] = []
    done = 0
    while done < len(items):
        part = new_part()
        done = fill_within(field(part), items, done, write, budget)
        parts.append(part)
    return parts


def _write_rejection(message: worker_pb2.LeaseRejection, rejection: tuple[str, str]) -> None:
    message.lease_id, message.reason = rejection


def fill_within(
    target: RepeatedCompositeFieldContainer[M],
    items: Sequence[T],
    start: int,
    write: Callable[[M, T], None],
    budget: int,
) -> int:
    """Append ``items[start:]`` to ``target`` while their framed sizes fit in ``budget`` bytes.

    Returns the index of the first item left out (``len(items)`` when all went in); the caller
    puts the rest in another message. gRPC fails a whole call or stream when one message exceeds
    its limit, so repeated fields that may grow large go out in parts. At least one item always
    goes in, so every call progresses: a caller that cannot send an item too large for any
    message has ``write`` describe it differently. Items are written in place (``target.add()``)
    because building each as a message of its own and copying it in cost twice as much.
    """
    size = 0
    for index in range(start, len(items)):
        message = target.add()
        write(message, items[index])
        size += message.ByteSize() + _FIELD_OVERHEAD
        if size > budget and index > start:
            del target[-1]
            return index
    return len(items)


# -- admin ---------------------------------------------------------------------------------


def queue_to_pb(stats: QueueStats) -> admin_pb2.QueueInfo:
    """Describe one queue."""
    return admin_pb2.QueueInfo(
        name=stats.name,
        ready=stats.ready,
        scheduled=stats.scheduled,
        leased=stats.leased,
        consumers=stats.consumers,
    )


def worker_to_pb(session: Session) -> admin_pb2.WorkerInfo:
    """Describe one connected worker."""
    hello = session.hello
    return admin_pb2.WorkerInfo(
        worker_id=hello.worker_id,
        session_id=session.session_id,
        hostname=hello.hostname,
        pid=hello.pid,
        queues=list(session.queues),
        concurrency=hello.concurrency,
        pool=hello.pool,
        credit=session.credit,
        leased=len(session.leases),
        connected_at=_time_to_pb(session.connected_at),
        draining=session.draining,
    )


def dead_letter_to_pb(record: TaskRecord, dead_at: float) -> admin_pb2.DeadLetter:
    """Describe one dead letter."""
    return admin_pb2.DeadLetter(task=result_to_pb(record), dead_at=_time_to_pb(dead_at))
