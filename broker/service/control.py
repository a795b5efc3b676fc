"""Inspect and remote control of workers over the sessions they already hold.

AdminService.ControlWorkers sends one WorkerControl down each chosen worker's stream and gathers
the WorkerControlReply messages that come back up, until every worker answered or the timeout
passed; the caller gets whatever arrived and the workers that stayed silent. Nothing here
touches the core's state: a control request is a conversation with live workers, not a change
to record. The one command the broker answers itself is SCHEDULED, since delays live at the
broker (no worker holds a task before it is due).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from broker.core.model import TaskRecord
from broker.core.sessions import Session
from broker.core.validation import check_name
from broker.errors import InvalidArgument, MessageTooLarge
from broker.service.codec import payload_to_pb
from celeriac.v1 import admin_pb2, worker_pb2

# Celery's default: inspect() gathers replies for one second.
DEFAULT_TIMEOUT_MS = 1000
MAX_TIMEOUT_MS = 60_000
DEFAULT_SCHEDULED_LIMIT = 1000
MAX_SCHEDULED_LIMIT = 100_000
# Destination ids and task ids one request may name.
MAX_NAMES = 10_000

_COMMANDS = frozenset(worker_pb2.ControlCommand.values()) - {worker_pb2.CONTROL_COMMAND_UNSPECIFIED}

# Sends a message down a session's stream; False when the stream is gone.
Send = Callable[[str, worker_pb2.BrokerMessage], bool]


@dataclass
class _Gathering:
    """One request in flight: the sessions asked, and the replies so far."""

    waiting: dict[str, str]  # session id -> worker id, until it answers
    answers: list[admin_pb2.WorkerAnswer] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ControlRequests:
    """The control requests in flight, by request id (one per ControlWorkers call)."""

    def __init__(self) -> None:
        self._gatherings: dict[str, _Gathering] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._gatherings)

    async def ask(
        self,
        sessions: Sequence[Session],
        control: worker_pb2.WorkerControl,
        send: Send,
        timeout: float,
    ) -> tuple[list[admin_pb2.WorkerAnswer], list[str]]:
        """Send ``control`` to every session and gather replies for up to ``timeout`` seconds.

        Returns:
            The answers in the order they arrived, and the worker ids that did not answer.
        """
        request_id = f"ctl-{next(self._ids)}"
        control.request_id = request_id
        message = worker_pb2.BrokerMessage(control=control)
        gathering = _Gathering({s.session_id: s.worker_id for s in sessions})
        self._gatherings[request_id] = gathering
        gone = []  # streams that ended just now: silent, without waiting for them
        try:
            for session_id in list(gathering.waiting):
                if not send(session_id, message):
                    gone.append(gathering.waiting.pop(session_id))
            if gathering.waiting:
                try:
                    async with asyncio.timeout(timeout):
                        await gathering.done.wait()
                except TimeoutError:
                    pass
        finally:
            del self._gatherings[request_id]
        return gathering.answers, sorted([*gone, *gathering.waiting.values()])

    def deliver(self, session_id: str, reply: worker_pb2.WorkerControlReply) -> None:
        """Take a worker's reply; one for a request that ended (too late) is dropped."""
        gathering = self._gatherings.get(reply.request_id)
        if gathering is None:
            return
        worker_id = gathering.waiting.pop(session_id, None)
        if worker_id is None:
            return  # not asked, or answered already
        gathering.answers.append(admin_pb2.WorkerAnswer(worker_id=worker_id, reply=reply))
        if not gathering.waiting:
            gathering.done.set()


@dataclass(frozen=True)
class ControlCall:
    """A checked ControlWorkersRequest."""

    command: worker_pb2.ControlCommand.ValueType
    destination: tuple[str, ...]
    timeout: float
    count: int
    task_ids: tuple[str, ...]
    limit: int

    def to_worker(self) -> worker_pb2.WorkerControl:
        """The message each worker receives (the request id is set when it is sent)."""
        return worker_pb2.WorkerControl(
            command=self.command, count=self.count, task_ids=self.task_ids
        )


def checked(request: admin_pb2.ControlWorkersRequest) -> ControlCall:
    """Check a request's fields and apply the defaults.

    Raises:
        InvalidArgument: An unknown command, a timeout or limit out of range, too many names.
        InvalidName: A destination id that is not a valid worker id.
    """
    if request.command not in _COMMANDS:
        raise InvalidArgument(f"unknown control command {request.command}")
    if request.timeout_ms > MAX_TIMEOUT_MS:
        raise InvalidArgument(
            f"timeout_ms {request.timeout_ms} is over the limit of {MAX_TIMEOUT_MS}"
        )
    if request.limit > MAX_SCHEDULED_LIMIT:
        raise InvalidArgument(f"limit {request.limit} is over the limit of {MAX_SCHEDULED_LIMIT}")
    for what, names in (("destination", request.destination), ("task_ids", request.task_ids)):
        if len(names) > MAX_NAMES:
            raise InvalidArgument(f"{what} names {len(names)} ids; at most {MAX_NAMES}")
    for worker_id in request.destination:
        check_name(worker_id, "worker id")
    return ControlCall(
        command=request.command,
        destination=tuple(dict.fromkeys(request.destination)),
        timeout=(request.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000,
        count=max(1, request.count),
        task_ids=tuple(request.task_ids),
        limit=request.limit or DEFAULT_SCHEDULED_LIMIT,
    )


def chosen(
    sessions: Sequence[Session], destination: Sequence[str]
) -> tuple[list[Session], list[str]]:
    """The open sessions a request goes to, and the destination ids with none."""
    if not destination:
        return list(sessions), []
    by_worker = {session.worker_id: session for session in sessions}
    return (
        [by_worker[w] for w in destination if w in by_worker],
        [w for w in destination if w not in by_worker],
    )


def fitted(
    response: admin_pb2.ControlWorkersResponse, max_bytes: int
) -> admin_pb2.ControlWorkersResponse:
    """``response`` within the message limit: task arguments are left out when it is over.

    Each worker keeps its own reply within the limit, but many workers' replies together may
    not be.

    Raises:
        MessageTooLarge: Still over the limit without arguments.
    """
    if response.ByteSize() <= max_bytes:
        return response
    summaries = [*response.scheduled, *(t for a in response.answers for t in a.reply.tasks)]
    for summary in summaries:
        if summary.HasField("args"):
            summary.ClearField("args")
            summary.args_omitted = True
    size = response.ByteSize()
    if size > max_bytes:
        raise MessageTooLarge(
            f"the answer is {size} bytes even without task arguments, over the message limit "
            f"of {max_bytes}; ask fewer workers (destination) or for fewer tasks (limit)"
        )
    return response


def scheduled_to_pb(record: TaskRecord) -> worker_pb2.TaskSummary:
    """A task waiting at the broker for its due time, as inspect().scheduled() shows it."""
    spec = record.spec
    summary = worker_pb2.TaskSummary(
        task_id=record.task_id,
        name=spec.name,
        queue=spec.queue,
        headers=spec.headers,
        attempt=record.attempts,
        retries=record.retries,
        priority=spec.priority,
        status="scheduled",
    )
    if record.args is not None:
        summary.args.CopyFrom(payload_to_pb(record.args))
    if record.due is not None:
        summary.eta.FromNanoseconds(round(record.due * 1e9))
    if spec.expires is not None:
        summary.expires.FromNanoseconds(round(spec.expires * 1e9))
    return summary
