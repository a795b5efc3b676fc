"""TaskService: submit, read results (with a server-side wait), revoke, forget, server info.

Submit and GetResult are served twice: as unary calls, and as calls multiplexed on one
``Session`` stream (:mod:`broker.service.client_session`). Both go through the same methods
here, so the two paths cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import nullcontext
from types import MappingProxyType

import grpc

import broker as broker_package
from broker.core.model import RevokeOutcome, SubmitResult, TaskRecord, TaskSpec
from broker.core.results import Waiter
from broker.errors import BrokerError, NotFound
from broker.service import codec
from broker.service.client_session import ClientSession
from broker.service.runtime import Runtime
from broker.service.shared_results import SharedResults
from broker.service.status import abort_with, translate_errors
from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2

FEATURES = (
    "submit-many",
    "result-wait",
    "eta",
    "expires",
    "retries",
    "time-limits",
    "revoke",
    "priorities",
    "dead-letters",
    "workflows",
    "dedup",
    "idempotency-keys",
    "custom-states",
    "progress",
    "session",
)

# The foreign records of a call that found none (see TaskService._foreign).
NO_RECORDS: Mapping[str, TaskRecord] = MappingProxyType({})

Context = grpc.aio.ServicerContext  # short alias for signatures

# Room for the framing around a batch answer.
_ANSWER_FRAME_BYTES = 64


class TaskService(client_pb2_grpc.TaskServiceServicer):
    """The producers' service; a thin translator over the core."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._core = runtime.broker
        self.refusals = runtime.refusals
        self.shared_results = SharedResults()
        self._started = time.monotonic()

    @translate_errors
    async def Submit(
        self,
        request: client_pb2.SubmitRequest,
        context: Context[client_pb2.SubmitRequest, client_pb2.SubmitResponse],
    ) -> client_pb2.SubmitResponse:
        """Submit one task."""
        answer = await self.submit(request)
        await self._runtime.durable()
        return answer

    @translate_errors
    async def SubmitMany(
        self,
        request: client_pb2.SubmitManyRequest,
        context: Context[client_pb2.SubmitManyRequest, client_pb2.SubmitManyResponse],
    ) -> client_pb2.SubmitManyResponse:
        """Submit a batch, all or nothing."""
        self._runtime.check_accepting()
        self._runtime.check_recordable()
        specs = [codec.spec_from_pb(spec) for spec in request.tasks]
        if self._runtime.cluster is not None and any(_shared_work(spec) for spec in specs):
            results = await self._submit_shared(specs, self._core.submit_many)
        else:
            results = self._core.submit_many(specs)
        self._runtime.changed()
        await self._runtime.durable()
        return codec.submit_many_response(results)

    @translate_errors
    async def GetResult(
        self,
        request: client_pb2.GetResultRequest,
        context: Context[client_pb2.GetResultRequest, client_pb2.GetResultResponse],
    ) -> client_pb2.GetResultResponse:
        """Read one result, holding the call up to wait_ms for it to be ready."""
        record = await self.get_result(request, context.peer())
        if record.ready:
            return self.shared_results.of(record).unary()
        return client_pb2.GetResultResponse(result=codec.result_to_pb(record))

    @translate_errors
    async def GetResults(
        self,
        request: client_pb2.GetResultsRequest,
        context: Context[client_pb2.GetResultsRequest, client_pb2.GetResultsResponse],
    ) -> client_pb2.GetResultsResponse:
        """Read many results, holding the call up to wait_ms for all to be ready."""
        task_ids = list(request.task_ids)
        foreign = await self._foreign(task_ids)
        await self._wait(task_ids, request.wait_ms, context.peer(), foreign)
        if foreign:  # fresh snapshots of those still running elsewhere
            foreign = await self._foreign(foreign)
        return self._fitting_results(task_ids, foreign)

    @translate_errors
    async def Revoke(
        self,
        request: client_pb2.RevokeRequest,
        context: Context[client_pb2.RevokeRequest, client_pb2.RevokeResponse],
    ) -> client_pb2.RevokeResponse:
        """Revoke tasks by id."""
        task_ids = list(request.task_ids)
        outcomes = self._core.revoke(task_ids, terminate=request.terminate, reason=request.reason)
        cluster = self._runtime.cluster
        unknown = [
            i for i, out in zip(task_ids, outcomes, strict=True) if out is RevokeOutcome.UNKNOWN
        ]
        if cluster is not None and unknown:  # held by another broker sharing the database?
            found = await cluster.revoke(unknown, request.terminate, request.reason)
            outcomes = [
                found.get(task_id, outcome)
                for task_id, outcome in zip(task_ids, outcomes, strict=True)
            ]
        self._runtime.changed()
        await self._runtime.durable()
        return client_pb2.RevokeResponse(
            outcomes=[codec.revoke_outcome_to_pb(outcome) for outcome in outcomes]
        )

    @translate_errors
    async def Forget(
        self,
        request: client_pb2.ForgetRequest,
        context: Context[client_pb2.ForgetRequest, client_pb2.ForgetResponse],
    ) -> client_pb2.ForgetResponse:
        """Drop stored results now (held by another broker sharing the database too)."""
        task_ids = list(request.task_ids)
        if self._runtime.cluster is not None:
            await self._runtime.cluster.adopt_finished(task_ids)
        forgotten = self._core.forget(task_ids)
        await self._runtime.durable()
        return client_pb2.ForgetResponse(forgotten=forgotten)

    @translate_errors
    async def ServerInfo(
        self,
        request: client_pb2.ServerInfoRequest,
        context: Context[client_pb2.ServerInfoRequest, client_pb2.ServerInfoResponse],
    ) -> client_pb2.ServerInfoResponse:
        """Version, features and limits."""
        config = self._core.config
        return client_pb2.ServerInfoResponse(
            version=broker_package.__version__,
            protocol="celeriac.v1",
            features=list(FEATURES),
            max_payload_bytes=config.max_payload_bytes,
            max_batch=config.max_batch,
            max_wait_ms=int(config.max_wait * 1000),
            uptime_seconds=time.monotonic() - self._started,
            max_message_bytes=config.max_message_bytes,
            refused=self.refusals.counts,
        )

    async def Session(  # type: ignore[override]
        self,
        request_iterator: object,
        context: grpc.aio.ServicerContext[client_pb2.SessionCall, client_pb2.SessionReply],
    ) -> None:
        """Serve Submit and GetResult calls multiplexed on one stream until the client ends it."""
        try:
            with self._runtime.peers.session(context.peer()):
                await ClientSession(self, context, self._core.config, self._runtime.peers).serve()
        except BrokerError as error:  # the stream is refused (too many, or undecodable bytes)
            self.refusals.record(error, "TaskService.Session")
            await abort_with(context, error)

    @property
    def shutting_down(self) -> bool:
        """Whether a graceful shutdown has begun."""
        return self._runtime.shutting_down

    def on_shutdown(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when a graceful shutdown begins; returns its unregistering."""
        return self._runtime.on_shutdown(callback)

    async def submit(self, request: client_pb2.SubmitRequest) -> client_pb2.SubmitResponse:
        """Accept one task (the body of Submit, unary or on a session).

        Raises:
            BrokerError: The spec is invalid, the queue is full or the broker is stopping.
        """
        self._runtime.check_accepting()
        self._runtime.check_recordable()
        spec = codec.spec_from_pb(request.task)
        if self._runtime.cluster is not None and _shared_work(spec):
            result = (await self._submit_shared([spec], self._submit_one))[0]
        else:
            result = self._core.submit(spec)
        self._runtime.changed()
        return codec.submit_response(result)

    def _submit_one(self, specs: Sequence[TaskSpec]) -> list[SubmitResult]:
        return [self._core.submit(spec) for spec in specs]

    async def _submit_shared(
        self,
        specs: list[TaskSpec],
        submit: Callable[[Sequence[TaskSpec]], list[SubmitResult]],
    ) -> list[SubmitResult]:
        """Submit through ``submit`` what no other broker sharing the database knows already.

        Idempotency keys are reserved across brokers first (Cluster.reserve);
        repeats get the other broker's answer, and the reservations of a refused batch are
        given up before the refusal is answered. Parents named but not held here are read
        (Cluster.parents_elsewhere): a task may wait for tasks other brokers hold.
        """
        cluster = self._runtime.cluster
        assert cluster is not None
        reservation = await cluster.reserve(specs)
        try:
            elsewhere = await cluster.parents_elsewhere(
                specs, besides={spec.task_id for spec in specs}
            )
        except BrokerError:
            await cluster.release(reservation)
            raise
        self._runtime.check_accepting()
        fresh = [spec for index, spec in enumerate(specs) if index not in reservation.answers]
        try:
            with self._core.workflows.parents_elsewhere(elsewhere):
                created = iter(submit(fresh) if fresh else [])
        except BrokerError:
            await cluster.release(reservation)
            raise
        return [reservation.answers.get(index) or next(created) for index in range(len(specs))]

    async def durable(self) -> None:
        """Return once every change so far is recorded (see Runtime.durable)."""
        await self._runtime.durable()

    def flush_now(self) -> bool:
        """Queue what the last calls produced (assignments above all) to the streams now.

        Returns:
            Whether anything was queued.
        """
        return self._runtime.flush_now()

    def result_is_ready(self, request: client_pb2.GetResultRequest) -> bool:
        """Whether :meth:`get_result` would answer without holding the call."""
        if request.wait_ms == 0:
            return True
        record = self._core.get(request.task_id)
        if record is None:  # with a shared database it may be elsewhere: held while looked up
            return self._runtime.cluster is None
        return record.ready

    async def get_result(
        self, request: client_pb2.GetResultRequest, peer: str | None = None
    ) -> TaskRecord:
        """Read one record, holding up to wait_ms for it to be ready (the body of GetResult).

        Args:
            request: The call.
            peer: The caller's address, whose held calls are counted; None when the caller
                counted this call itself (a Session stream).

        Raises:
            NotFound: The broker does not know the task id, or forgot it while waiting.
            HeldCallsExceeded: ``peer`` holds as many waiting calls as allowed.
        """
        task_id = request.task_id
        foreign = await self._foreign([task_id])
        if self._core.get(task_id) is None and task_id not in foreign:
            raise NotFound(f"unknown task id {task_id[:300]!r}")
        await self._wait([task_id], request.wait_ms, peer, foreign)
        record = self._core.get(task_id)
        if record is None and foreign:  # still running on another broker: its state now
            record = (await self._foreign([task_id])).get(task_id)
        if record is None:  # forgotten or expired while we waited
            raise NotFound(f"unknown task id {request.task_id[:300]!r}")
        return record

    def watch(self, task_id: str, callback: Callable[[], None]) -> Waiter | None:
        """Call ``callback`` once ``task_id`` is ready; None when it is ready (or unknown) now."""
        return self._core.wait([task_id], callback)

    def ready_results(self, task_ids: list[str], budget: int) -> list[client_pb2.ReadyResults]:
        """The results of ``task_ids`` as pushes, each message under ``budget`` bytes.

        A result too large for any message goes as state UNKNOWN, which tells the client to ask
        with GetResult (and meet the same size error a unary call would).
        """

        def write_pushable(message: tasks_pb2.TaskResult, task_id: str) -> None:
            self._write_result(message, task_id)
            # Room for its own tag and length in the batch (codec.fill_within counts them too).
            if message.ByteSize() + 16 > budget:
                message.Clear()
                codec.write_unknown(message, task_id)

        return codec.in_parts(
            task_ids, write_pushable, budget, client_pb2.ReadyResults, lambda push: push.results
        )

    async def _foreign(self, task_ids: Collection[str]) -> dict[str, TaskRecord]:
        """Tasks another broker sharing the database holds, unfinished (see Cluster.lookup)."""
        cluster = self._runtime.cluster
        if cluster is None or all(self._core.get(task_id) for task_id in task_ids):
            return {}
        return await cluster.lookup(task_ids)

    def _fitting_results(
        self, task_ids: list[str], foreign: Mapping[str, TaskRecord]
    ) -> client_pb2.GetResultsResponse:
        """The results of ``task_ids`` in order, stopping before the message limit.

        A thousand results of a megabyte each cannot travel in one answer: gRPC would fail the
        whole call. The first result always goes, so a caller asking again always progresses.
        """
        budget = self._core.config.max_message_bytes - _ANSWER_FRAME_BYTES
        answer = client_pb2.GetResultsResponse()
        done = codec.fill_within(
            answer.results,
            task_ids,
            0,
            functools.partial(self._write_result, foreign=foreign),
            budget,
        )
        answer.omitted = len(task_ids) - done
        return answer

    def _write_result(
        self,
        message: tasks_pb2.TaskResult,
        task_id: str,
        foreign: Mapping[str, TaskRecord] = NO_RECORDS,
    ) -> None:
        record: TaskRecord | None = self._core.get(task_id) or foreign.get(task_id)
        if record is None:
            codec.write_unknown(message, task_id)
        else:
            codec.write_result(message, record)

    async def _wait(
        self,
        task_ids: list[str],
        wait_ms: int,
        peer: str | None,
        elsewhere: Collection[str] = (),
    ) -> None:
        """Hold the call until every task is ready or the (capped) wait passes; no polling.

        If the caller disconnects, this coroutine is cancelled and the waiter is removed, so
        nothing leaks.

        Raises:
            ShuttingDown: The broker began a graceful shutdown before the tasks were ready;
                the caller asks again (the restarted broker holds the wait from there).
        """
        timeout = min(wait_ms / 1000, self._core.config.max_wait)
        if timeout <= 0:
            return
        ready = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        waiter = self._core.wait(task_ids, wake, elsewhere)
        if waiter is None:
            return
        # A caller that counted the call itself (a Session stream) passes no peer.
        held = self._runtime.peers.hold_call(peer) if peer is not None else nullcontext()
        forget = self._runtime.on_shutdown(wake)
        try:
            # asyncio.timeout wakes this call one loop turn after the future is set, where
            # asyncio.wait_for would take two (its own waiter future sits in between).
            with held:
                if not self._runtime.shutting_down:
                    async with asyncio.timeout(timeout):
                        await ready
        except TimeoutError:
            pass
        finally:
            waiter.cancel()
            forget()
        if self._runtime.shutting_down and not self._all_ready(task_ids):
            self._runtime.check_accepting()

    def _all_ready(self, task_ids: list[str]) -> bool:
        records = (self._core.get(task_id) for task_id in task_ids)
        return all(record is None or record.ready for record in records)


def _shared_work(spec: TaskSpec) -> bool:
    """Whether submitting ``spec`` asks a shared database first (brokers sharing it).

    An idempotency key is reserved across brokers, and parents this broker does not hold are
    read. Task ids are not reserved: clients mint one for every task, so checking them would
    cost every submit a database round trip (docs/postgresql.md).
    """
    return bool(spec.idempotency_key or spec.depends_on)
