"""The only module of the worker that touches protobuf: wire messages ↔ the worker's dataclasses.

Broker messages become small frozen events (`Welcome`, `Assign`, `CancelJobs`, `Ping`, `Drain`,
`Rejected`, and the inspect/control request `worker.control.Control`); what the worker says goes
out through `hello`, `report`, `pong` and `control_reply`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from celeriac.v1 import tasks_pb2, worker_pb2
from worker.control import Control, ControlReply, HeldTask, Stats
from worker.jobs import (
    Heartbeat,
    Job,
    Outcome,
    OutcomeState,
    ParentResult,
    Payload,
    StateUpdate,
    TaskErrorInfo,
)
from worker.limits import PayloadLimits

# Millisecond fields are uint32 on the wire: longer spans are clamped to the largest value.
_MAX_UINT32 = 2**32 - 1
# What the WorkerMessage adds around its Report: a tag byte and a length varint (5 bytes at most).
_REPORT_FRAME_BYTES = 6

_STATES = {
    OutcomeState.SUCCESS: tasks_pb2.TASK_STATE_SUCCESS,
    OutcomeState.FAILURE: tasks_pb2.TASK_STATE_FAILURE,
    OutcomeState.RETRY: tasks_pb2.TASK_STATE_RETRY,
    OutcomeState.REVOKED: tasks_pb2.TASK_STATE_REVOKED,
}

# ControlCommand values by the worker.control name they stand for ("CONTROL_COMMAND_PING" ->
# "ping"); SCHEDULED is the broker's to answer and never reaches a worker.
_COMMANDS = {
    number: name.removeprefix("CONTROL_COMMAND_").lower()
    for name, number in worker_pb2.ControlCommand.items()
    if number not in (worker_pb2.CONTROL_COMMAND_UNSPECIFIED, worker_pb2.CONTROL_COMMAND_SCHEDULED)
}


@dataclass(frozen=True)
class Welcome:
    """The broker accepted the session (`limits` has the broker's defaults where it sent 0)."""

    session_id: str
    ping_interval: float
    ping_timeout: float
    kept_lease_ids: tuple[str, ...]
    broker_version: str
    limits: PayloadLimits = field(default_factory=PayloadLimits)
    # The broker acknowledges outcomes (OutcomeAcks); False from brokers that predate acks.
    acks_outcomes: bool = False


@dataclass(frozen=True)
class Assign:
    """New jobs to run, and the leases of outcomes the broker took (see `OutcomesTaken`)."""

    jobs: tuple[Job, ...]
    outcomes_taken: tuple[str, ...] = ()


@dataclass(frozen=True)
class CancelJobs:
    """Stop these leases (kill them when `terminate`)."""

    lease_ids: tuple[str, ...]
    terminate: bool
    reason: str


@dataclass(frozen=True)
class Ping:
    """A liveness probe to answer with the same nonce."""

    nonce: int


@dataclass(frozen=True)
class Drain:
    """Stop taking work, finish what runs, return the rest."""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """Leases the broker no longer holds for this worker; their reports were dropped."""

    rejections: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class OutcomesTaken:
    """The broker took the outcomes of these leases (applied and recorded, or rejected)."""

    lease_ids: tuple[str, ...]


BrokerEvent = Welcome | Assign | CancelJobs | Ping | Drain | Rejected | OutcomesTaken | Control


@dataclass
class ReportBatch:
    """Everything one Report message carries (see `worker.proto`)."""

    credit: int = 0
    started: list[str] | None = None
    outcomes: list[Outcome] | None = None
    heartbeats: list[Heartbeat] | None = None
    state_updates: list[StateUpdate] | None = None
    returned: list[str] | None = None
    withdraw_credit: bool = False


def hello(
    *,
    worker_id: str,
    hostname: str,
    pid: int,
    queues: Sequence[str],
    task_names: Iterable[str],
    concurrency: int,
    pool: str,
    version: str,
    held_lease_ids: Iterable[str],
    rate_limits: Mapping[str, str],
    periodic_tasks: Sequence[tasks_pb2.PeriodicTask] = (),
) -> worker_pb2.WorkerMessage:
    """The first message of a session."""
    return worker_pb2.WorkerMessage(
        hello=worker_pb2.Hello(
            worker_id=worker_id,
            hostname=hostname,
            pid=pid,
            queues=list(queues),
            task_names=sorted(task_names),
            concurrency=concurrency,
            pool=pool,
            version=version,
            held_lease_ids=list(held_lease_ids),
            rate_limits=rate_limits,
            periodic_tasks=periodic_tasks,
        )
    )


def pong(nonce: int) -> worker_pb2.WorkerMessage:
    """The answer to a Ping."""
    return worker_pb2.WorkerMessage(pong=worker_pb2.Pong(nonce=nonce))


def report(batch: ReportBatch) -> worker_pb2.WorkerMessage:
    """One Report carrying the whole batch."""
    return worker_pb2.WorkerMessage(
        report=worker_pb2.Report(
            credit=batch.credit,
            started_lease_ids=batch.started or [],
            outcomes=[_outcome(o) for o in batch.outcomes or []],
            extensions=[_extension(h) for h in batch.heartbeats or []],
            state_updates=[
                worker_pb2.StateUpdate(lease_id=u.lease_id, state=u.state, meta=_payload(u.meta))
                for u in batch.state_updates or []
            ],
            returned_lease_ids=batch.returned or [],
            withdraw_credit=batch.withdraw_credit,
        )
    )


def reports(batch: ReportBatch, max_message_bytes: int) -> list[worker_pb2.WorkerMessage]:
    """The batch as Reports of at most `max_message_bytes` each (one, unless it is too large).

    A larger message would not just be refused: gRPC ends the whole session stream. Split, the
    started acks go first and the credit (with `withdraw_credit`) last, so the broker sees
    every start before its outcome and assigns new tasks only once all the outcomes are in,
    as it would from one Report. An item larger than the limit on its own still goes, alone:
    `worker.limits` keeps the worker from producing one.
    """
    whole = report(batch)
    if whole.ByteSize() <= max_message_bytes:
        return [whole]
    parts = _split_report(whole.report, max_message_bytes - _REPORT_FRAME_BYTES)
    return [worker_pb2.WorkerMessage(report=part) for part in parts]


def _split_report(whole: worker_pb2.Report, budget: int) -> list[worker_pb2.Report]:
    """Pack the report's items, in order, into reports of at most `budget` bytes."""
    report_of = worker_pb2.Report
    pieces = [
        *(report_of(started_lease_ids=[lease_id]) for lease_id in whole.started_lease_ids),
        *(report_of(extensions=[extension]) for extension in whole.extensions),
        *(report_of(state_updates=[update]) for update in whole.state_updates),
        *(report_of(outcomes=[outcome]) for outcome in whole.outcomes),
        *(report_of(returned_lease_ids=[lease_id]) for lease_id in whole.returned_lease_ids),
        report_of(credit=whole.credit, withdraw_credit=whole.withdraw_credit),
    ]
    # A message's encoding is its fields' encodings one after the other, so the size of merged
    # pieces is the sum of their sizes.
    parts: list[worker_pb2.Report] = []
    part, size = report_of(), 0
    for piece in pieces:
        cost = piece.ByteSize()
        if size and size + cost > budget:
            parts.append(part)
            part, size = report_of(), 0
        part.MergeFrom(piece)
        size += cost
    parts.append(part)
    return parts


def decode(
    message: worker_pb2.BrokerMessage, max_payload_bytes: int | None = None
) -> BrokerEvent | None:
    """Turn a broker message into an event; None for a kind this worker does not know.

    Args:
        message: What the broker sent.
        max_payload_bytes: The session's largest result body, given to every assigned job.
    """
    kind = message.WhichOneof("kind")
    if kind == "welcome":
        w = message.welcome
        return Welcome(
            session_id=w.session_id,
            ping_interval=w.ping_interval_ms / 1000,
            ping_timeout=w.ping_timeout_ms / 1000,
            kept_lease_ids=tuple(w.kept_lease_ids),
            broker_version=w.broker_version,
            limits=PayloadLimits.from_welcome(w.max_payload_bytes, w.max_message_bytes),
            acks_outcomes=w.acks_outcomes,
        )
    if kind == "assignments":
        assignments = message.assignments
        return Assign(
            tuple(job_from_assignment(a, max_payload_bytes) for a in assignments.tasks),
            tuple(assignments.outcome_acks),
        )
    if kind == "cancel":
        c = message.cancel
        return CancelJobs(tuple(c.lease_ids), c.terminate, c.reason)
    if kind == "ping":
        return Ping(message.ping.nonce)
    if kind == "drain":
        return Drain(message.drain.reason)
    if kind == "rejections":
        return Rejected(tuple((r.lease_id, r.reason) for r in message.rejections.rejections))
    if kind == "outcome_acks":
        return OutcomesTaken(tuple(message.outcome_acks.lease_ids))
    if kind == "control":
        asked = message.control
        command = _COMMANDS.get(asked.command, "")
        return Control(asked.request_id, command, asked.count or 1, tuple(asked.task_ids))
    return None


def control_reply(reply: ControlReply) -> worker_pb2.WorkerMessage:
    """The answer to a Control."""
    message = worker_pb2.WorkerControlReply(
        request_id=reply.request_id,
        error=reply.error,
        tasks=[_summary(task) for task in reply.tasks],
        task_names=reply.task_names,
        queues=reply.queues,
        concurrency=reply.concurrency,
        message=reply.message,
    )
    if reply.stats is not None:
        message.stats.CopyFrom(_stats(reply.stats))
    return worker_pb2.WorkerMessage(control_reply=message)


def _summary(task: HeldTask) -> worker_pb2.TaskSummary:
    job = task.job
    summary = worker_pb2.TaskSummary(
        task_id=job.task_id,
        name=job.name,
        queue=job.queue,
        headers=job.headers,
        attempt=job.attempt,
        retries=job.retries,
        priority=job.priority,
        lease_id=job.lease_id,
        worker_pid=task.pid,
        status=task.status,
        args_omitted=task.args_omitted,
    )
    if not task.args_omitted:
        summary.args.CopyFrom(_payload(job.args))
    if task.started_at is not None:
        summary.started_at.FromNanoseconds(round(task.started_at * 1e9))
    if job.eta is not None:
        summary.eta.CopyFrom(_timestamp(job.eta))
    if job.expires is not None:
        summary.expires.CopyFrom(_timestamp(job.expires))
    return summary


def _stats(stats: Stats) -> worker_pb2.WorkerStats:
    return worker_pb2.WorkerStats(
        pid=stats.pid,
        hostname=stats.hostname,
        pool=stats.pool,
        concurrency=stats.concurrency,
        child_pids=stats.child_pids,
        uptime_seconds=stats.uptime,
        total=stats.total,
        reserved=stats.reserved,
        active=stats.active,
        user_cpu_seconds=stats.user_cpu,
        system_cpu_seconds=stats.system_cpu,
        max_rss_kb=stats.max_rss_kb,
        version=stats.version,
    )


def job_from_assignment(a: worker_pb2.Assignment, max_payload_bytes: int | None = None) -> Job:
    """Translate one Assignment into a Job (time limits are those the call set, if any)."""
    return Job(
        lease_id=a.lease_id,
        task_id=a.task_id,
        name=a.name,
        args=Payload(a.args.content_type, a.args.body),
        attempt=a.attempt,
        retries=a.retries,
        queue=a.queue or "default",
        headers=dict(a.headers),
        eta=_time(a.eta) if a.HasField("eta") else None,
        expires=_time(a.expires) if a.HasField("expires") else None,
        time_limit=a.time_limit_ms / 1000 or None,
        soft_time_limit=a.soft_time_limit_ms / 1000 or None,
        ignore_result=a.ignore_result,
        priority=a.priority,
        max_retries=a.max_retries if a.HasField("max_retries") else None,
        max_payload_bytes=max_payload_bytes,
        dependency_mode=_MODES.get(a.dependency_mode, "") if a.dependency_mode else "",
        parents=tuple(_parent(p) for p in a.parent_results) if a.parent_results else (),
    )


_MODES = {
    tasks_pb2.DEPENDENCY_MODE_IGNORE: "ignore",
    tasks_pb2.DEPENDENCY_MODE_RESULT: "result",
    tasks_pb2.DEPENDENCY_MODE_RESULTS: "results",
    tasks_pb2.DEPENDENCY_MODE_ERRBACK: "errback",
}


def _parent(message: tasks_pb2.ParentResult) -> ParentResult:
    result = message.result if message.HasField("result") else None
    error = message.error if message.HasField("error") else None
    return ParentResult(
        task_id=message.task_id,
        name=message.name,
        result=None if result is None else Payload(result.content_type, result.body),
        error=None
        if error is None
        else TaskErrorInfo(error.type, error.message, error.traceback, error.retryable),
    )


def _outcome(o: Outcome) -> worker_pb2.Outcome:
    message = worker_pb2.Outcome(lease_id=o.lease_id, state=_STATES[o.state])
    if o.result is not None:
        message.result.CopyFrom(_payload(o.result))
    if o.error is not None:
        message.error.CopyFrom(_error(o.error))
    if o.replaced_by:
        message.replaced_by = o.replaced_by
    if o.state is OutcomeState.RETRY:
        if o.max_retries is not None:
            message.max_retries = o.max_retries
        if o.retry_eta is not None:
            message.retry_eta.CopyFrom(_timestamp(o.retry_eta))
        else:
            message.retry_countdown_ms = _ms(o.retry_countdown or 0.0)
    return message


def _extension(h: Heartbeat) -> worker_pb2.LeaseExtension:
    message = worker_pb2.LeaseExtension(lease_id=h.lease_id, extend_ms=_ms(h.extend or 0.0))
    if h.progress is not None:
        message.progress.CopyFrom(_payload(h.progress))
    return message


def _payload(p: Payload) -> tasks_pb2.Payload:
    return tasks_pb2.Payload(content_type=p.content_type, body=p.body)


def _error(e: TaskErrorInfo) -> tasks_pb2.TaskError:
    return tasks_pb2.TaskError(
        type=e.type, message=e.message, traceback=e.traceback, retryable=e.retryable
    )


def _ms(seconds: float) -> int:
    return max(0, min(_MAX_UINT32, round(seconds * 1000)))


def _time(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp
