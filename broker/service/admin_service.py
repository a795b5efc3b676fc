"""AdminService: queues, workers, dead letters and purges, for operators and dashboards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from broker.core.broker import DEFAULT_DEAD_LETTER_LIMIT
from broker.core.model import TaskRecord
from broker.errors import BrokerError, InvalidArgument
from broker.service import codec, control
from broker.service.decoding import decoded
from broker.service.events import BrokerEvent, Subscriber
from broker.service.runtime import Runtime
from broker.service.status import abort_with, translate_errors
from celeriac.v1 import admin_pb2, admin_pb2_grpc, worker_pb2

Context = grpc.aio.ServicerContext
# Every dead letter a broker holds (a limit no listing reaches).
_EVERY = 1 << 62


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """The operators' service; a thin translator over the core."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._core = runtime.broker
        self.refusals = runtime.refusals

    @translate_errors
    async def ListQueues(
        self,
        request: admin_pb2.ListQueuesRequest,
        context: Context[admin_pb2.ListQueuesRequest, admin_pb2.ListQueuesResponse],
    ) -> admin_pb2.ListQueuesResponse:
        """Every known queue with its depths (a shared pool's counted now)."""
        if self._runtime.cluster is not None:
            await self._runtime.cluster.count_pool()
        queues = [codec.queue_to_pb(stats) for stats in self._core.queue_stats()]
        return admin_pb2.ListQueuesResponse(queues=queues)

    @translate_errors
    async def ListWorkers(
        self,
        request: admin_pb2.ListWorkersRequest,
        context: Context[admin_pb2.ListWorkersRequest, admin_pb2.ListWorkersResponse],
    ) -> admin_pb2.ListWorkersResponse:
        """Connected workers."""
        workers = [codec.worker_to_pb(session) for session in self._core.open_sessions()]
        return admin_pb2.ListWorkersResponse(workers=workers)

    @translate_errors
    async def ListDeadLetters(
        self,
        request: admin_pb2.ListDeadLettersRequest,
        context: Context[admin_pb2.ListDeadLettersRequest, admin_pb2.ListDeadLettersResponse],
    ) -> admin_pb2.ListDeadLettersResponse:
        """Dead letters, oldest first (every broker's, when sharing a database)."""
        listed, total = await list_dead_letters(self._runtime, request.queue, request.limit)
        return admin_pb2.ListDeadLettersResponse(
            dead_letters=[codec.dead_letter_to_pb(record, at) for record, at in listed],
            total=total,
        )

    @translate_errors
    async def RequeueDeadLetters(
        self,
        request: admin_pb2.RequeueDeadLettersRequest,
        context: Context[admin_pb2.RequeueDeadLettersRequest, admin_pb2.RequeueDeadLettersResponse],
    ) -> admin_pb2.RequeueDeadLettersResponse:
        """Put dead letters back in their queues."""
        count = await requeue_dead_letters(
            self._runtime, list(request.task_ids), all=request.all, queue=request.queue
        )
        return admin_pb2.RequeueDeadLettersResponse(requeued=count)

    @translate_errors
    async def PurgeDeadLetters(
        self,
        request: admin_pb2.PurgeDeadLettersRequest,
        context: Context[admin_pb2.PurgeDeadLettersRequest, admin_pb2.PurgeDeadLettersResponse],
    ) -> admin_pb2.PurgeDeadLettersResponse:
        """Drop dead letters."""
        count = await purge_dead_letters(
            self._runtime, list(request.task_ids), all=request.all, queue=request.queue
        )
        return admin_pb2.PurgeDeadLettersResponse(purged=count)

    @translate_errors
    async def PurgeQueue(
        self,
        request: admin_pb2.PurgeQueueRequest,
        context: Context[admin_pb2.PurgeQueueRequest, admin_pb2.PurgeQueueResponse],
    ) -> admin_pb2.PurgeQueueResponse:
        """Revoke every ready task of a queue (a shared pool's too)."""
        if self._runtime.cluster is not None:
            self._runtime.check_recordable()
            await self._runtime.cluster.take_queue(request.queue)
        count = self._core.purge_queue(request.queue)
        self._runtime.changed()
        await self._runtime.durable()
        return admin_pb2.PurgeQueueResponse(purged=count)

    @translate_errors
    async def ControlWorkers(
        self,
        request: admin_pb2.ControlWorkersRequest,
        context: Context[admin_pb2.ControlWorkersRequest, admin_pb2.ControlWorkersResponse],
    ) -> admin_pb2.ControlWorkersResponse:
        """Ask the chosen workers, over their sessions, and answer with what came back."""
        call = control.checked(request)
        if call.command == worker_pb2.CONTROL_COMMAND_SCHEDULED:
            records, total = self._core.scheduled(call.limit)
            response = admin_pb2.ControlWorkersResponse(
                scheduled=[control.scheduled_to_pb(record) for record in records],
                scheduled_total=total,
            )
            return control.fitted(response, self._core.config.max_message_bytes)
        sessions, unknown = control.chosen(self._core.open_sessions(), call.destination)
        with self._runtime.peers.hold_call(context.peer()):
            answers, missing = await self._runtime.control.ask(
                sessions, call.to_worker(), self._runtime.send, call.timeout
            )
        response = admin_pb2.ControlWorkersResponse(
            answers=answers, missing=missing, unknown=unknown
        )
        return control.fitted(response, self._core.config.max_message_bytes)

    @translate_errors
    async def ListPeriodicTasks(
        self,
        request: admin_pb2.ListPeriodicTasksRequest,
        context: Context[admin_pb2.ListPeriodicTasksRequest, admin_pb2.ListPeriodicTasksResponse],
    ) -> admin_pb2.ListPeriodicTasksResponse:
        """Every periodic task, by name."""
        entries = sorted(self._core.periodic.entries.items())
        return admin_pb2.ListPeriodicTasksResponse(
            periodic_tasks=[codec.periodic_to_pb(entry) for _, entry in entries]
        )

    @translate_errors
    async def RemovePeriodicTask(
        self,
        request: admin_pb2.RemovePeriodicTaskRequest,
        context: Context[admin_pb2.RemovePeriodicTaskRequest, admin_pb2.RemovePeriodicTaskResponse],
    ) -> admin_pb2.RemovePeriodicTaskResponse:
        """Stop and forget one periodic task."""
        if not request.name:
            raise InvalidArgument("name is required")
        removed = self._core.periodic.remove(request.name)
        self._runtime.changed()
        await self._runtime.durable()
        return admin_pb2.RemovePeriodicTaskResponse(removed=removed)

    @translate_errors
    async def SetRateLimit(
        self,
        request: admin_pb2.SetRateLimitRequest,
        context: Context[admin_pb2.SetRateLimitRequest, admin_pb2.SetRateLimitResponse],
    ) -> admin_pb2.SetRateLimitResponse:
        """Override a task's global rate limit, or drop the override; answered once journaled."""
        per_second = None if request.reset else codec.rate_override_from_pb(request.rate_limit)
        limit = self._core.set_rate_limit(request.task_name, per_second)
        self._runtime.changed()
        await self._runtime.durable()
        return admin_pb2.SetRateLimitResponse(
            per_second=limit.per_second,
            declared_per_second=limit.declared_per_second,
            overridden=limit.overridden,
        )

    async def Events(
        self,
        request: admin_pb2.EventsRequest,
        context: Context[admin_pb2.EventsRequest, admin_pb2.Event],
    ) -> AsyncIterator[admin_pb2.Event]:
        """Task and worker events from now on, filtered, until the caller cancels."""
        try:
            # A stream's request is not checked by the decoding wrapper (broker.service.decoding).
            request = decoded(request, admin_pb2.EventsRequest)
            subscriber = Subscriber(
                request.queues,
                request.task_names,
                request.kinds,
                self._core.config.events_buffer,
            )
        except BrokerError as error:
            self.refusals.record(error, "AdminService.Events")
            await abort_with(context, error)
        events = self._runtime.events
        events.subscribe(subscriber)
        try:
            # Sent at once, so a reader knows it is subscribed before the first event.
            await context.send_initial_metadata(())
            while True:
                event, dropped = await subscriber.next()
                yield event_to_pb(event, dropped)
        finally:
            events.unsubscribe(subscriber)


async def list_dead_letters(
    runtime: Runtime, queue: str, limit: int
) -> tuple[list[tuple[TaskRecord, float]], int]:
    """Dead letters oldest first (at most ``limit``, default 100) and the matching total.

    Brokers sharing a database list every broker's, as written, with this broker's own.

    Raises:
        JournalUnavailable: The shared database cannot be read now.
    """
    core = runtime.broker
    if runtime.cluster is None:
        return core.dead_letters(queue, limit)
    held, _ = core.dead_letters(queue, _EVERY)
    here = {record.task_id for record, _ in held}
    written = [
        (record, record.date_done or 0.0)
        for record in await runtime.cluster.dead_letters(queue)
        if record.task_id not in here
    ]
    every = sorted(held + written, key=lambda entry: entry[1])
    return every[: limit or DEFAULT_DEAD_LETTER_LIMIT], len(every)


async def _adopt_dead_letters(
    runtime: Runtime, task_ids: list[str], *, all: bool, queue: str
) -> None:
    """Bring dead letters other brokers hold here, when sharing a database."""
    if runtime.cluster is not None:
        await runtime.cluster.adopt_finished(None if all else task_ids, queue)


async def requeue_dead_letters(
    runtime: Runtime, task_ids: list[str], *, all: bool, queue: str
) -> int:
    """Put dead letters back in their queues; answers once that is recorded (also the dashboard's).

    Raises:
        BrokerError: The journal cannot record it, or the queues are full.
    """
    runtime.check_recordable()
    await _adopt_dead_letters(runtime, task_ids, all=all, queue=queue)
    count = runtime.broker.requeue_dead_letters(task_ids, all=all, queue=queue)
    runtime.changed()
    await runtime.durable()
    return count


async def purge_dead_letters(
    runtime: Runtime, task_ids: list[str], *, all: bool, queue: str
) -> int:
    """Drop dead letters; answers once that is recorded (also the dashboard's)."""
    await _adopt_dead_letters(runtime, task_ids, all=all, queue=queue)
    count = runtime.broker.purge_dead_letters(task_ids, all=all, queue=queue)
    await runtime.durable()
    return count


def event_to_pb(event: BrokerEvent, dropped: int) -> admin_pb2.Event:
    """One stream message: ``event`` and the count of events missed just before it."""
    message = admin_pb2.Event(
        kind=event.kind,
        task_id=event.task_id,
        task_name=event.task_name,
        queue=event.queue,
        worker_id=event.worker_id,
        detail=event.detail,
        dropped=dropped,
        active=event.active,
        concurrency=event.concurrency,
        runtime=event.runtime,
    )
    message.at.FromNanoseconds(round(event.at * 1e9))
    return message
