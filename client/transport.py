"""Where the client speaks gRPC: channels, calls and deadlines.

Everything above this module works with the plain records of ``client.records``; protobuf
messages are built and read by ``client.codec`` (``celeriac.control_replies`` for app.control), on
this module's behalf only. Besides this
module only ``client.call_stream`` (the session stream that carries ``delay()`` and ``get()``)
and ``client.status`` (the status-code table) touch gRPC.

Connections are made lazily, on the first call, so importing a task module never touches the
network. The first call of a connection waits at most ``connect_timeout`` for the broker and
then raises :class:`~client.errors.BrokerUnavailable`; every call carries a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from celeriac.connection import open_aio_channel, open_channel
from celeriac.v1 import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc
from client import codec, states
from client.call_stream import AsyncCallStream, AsyncResultWatch, CallStream, ResultWatch
from client.chunks import SUBMIT_WINDOW, ChunkCall, chunk_failure, id_slices
from client.config import ClientConfig
from client.errors import BrokerGone, BrokerUnavailable, TaskNotFound
from client.records import (
    ResultRecord,
    ServerInfo,
    SubmitSpec,
    Submitted,
)
from client.status import rpc_error

logger = logging.getLogger(__name__)

R = TypeVar("R")

_AioSubmitMany = grpc.aio.UnaryUnaryCall[
    client_pb2.SubmitManyRequest, client_pb2.SubmitManyResponse
]


# Keepalive pings find a dead connection while a result wait is held open; two minutes stays
# within what a gRPC server accepts by default. Reconnect backoff is capped low so that a
# restarted broker is found again within seconds, not gRPC's default two minutes.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    # The broker bounds what it sends by its own message limit (ServerInfo.max_message_bytes);
    # a lower limit here would only turn a large result into an error after it was sent.
    ("grpc.max_receive_message_length", -1),
    # No bandwidth probing, a fixed 1 MiB stream window: the probe's pings cost a round trip
    # 40-80 µs (the broker and the worker do the same; why: broker/service/server.py).
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1 << 20),
)

# Room for the SessionCall frame around a request when checking it against the message limit.
_SESSION_FRAME_BYTES = 64


class Transport:
    """Blocking calls to one broker over one lazily created, thread-safe channel.

    A process forked after calls were made (a prefork web server, say) opens its own channel
    and stream on its first call: gRPC objects and the session's reader thread do not survive a
    fork, so the inherited ones are dropped, never used or closed.
    """

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._target = config.target
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._stub: client_pb2_grpc.TaskServiceStub | None = None
        self._connected = False
        self._info: ServerInfo | None = None
        self._stream: CallStream | None = None

    def submit(self, specs: Sequence[SubmitSpec]) -> list[Submitted]:
        """Submit tasks: one ``Submit`` for one spec, one ``SubmitMany`` for several.

        One spec is sent again if the broker went away meanwhile (see :func:`_once_more`).
        """
        if len(specs) == 1:
            one = codec.submit_request(specs[0])
            return [_once_more(lambda: self._submit_one(specs[0], one))]
        many = codec.submit_many_request(specs)
        replies = self._invoke("SubmitMany", lambda stub, t: stub.SubmitMany(many, timeout=t))
        return [codec.submitted(reply) for reply in replies.results]

    def _submit_one(self, spec: SubmitSpec, request: client_pb2.SubmitRequest) -> Submitted:
        stream = self._session_for(request)
        if stream is not None:
            return self._submit_on_session(stream, spec, request)
        return codec.submitted(self._invoke("Submit", lambda s, t: s.Submit(request, timeout=t)))

    def submit_chunks(
        self, chunks: Iterable[Sequence[SubmitSpec]], in_flight: int = SUBMIT_WINDOW
    ) -> list[Submitted]:
        """Submit batches with ``SubmitMany``, keeping up to ``in_flight`` calls open at once.

        The next chunk is encoded while the broker accepts the previous ones; answers come
        back in chunk order. Each chunk is accepted all or nothing. When one fails, the calls
        already sent after it are waited for, and the error raised names which tasks (by
        position) were accepted and which were not.
        """
        stub = self._ready_stub()
        timeout = self._config.rpc_timeout
        sent: deque[ChunkCall[grpc.Future[client_pb2.SubmitManyResponse]]] = deque()
        submitted: list[Submitted] = []
        start = 0
        for chunk in chunks:
            request = codec.submit_many_request(chunk)
            call = stub.SubmitMany.future(request, timeout=timeout)
            sent.append(ChunkCall(start, len(chunk), call))
            start += len(chunk)
            if len(sent) >= in_flight:
                submitted += self._chunk_answers(sent)
        while sent:
            submitted += self._chunk_answers(sent)
        return submitted

    def _chunk_answers(
        self, sent: deque[ChunkCall[grpc.Future[client_pb2.SubmitManyResponse]]]
    ) -> list[Submitted]:
        oldest = sent.popleft()
        try:
            reply = oldest.call.result()
        except grpc.RpcError as error:
            failure = rpc_error(error, "SubmitMany", self._target)
            if isinstance(failure, BrokerUnavailable):
                self._connected = False
            later = [(c.start, c.count, c.call.exception() is None) for c in sent]
            raise chunk_failure(failure, oldest.start, oldest.count, later) from None
        return [codec.submitted(answer) for answer in reply.results]

    def get_result(self, task_id: str, wait: float = 0.0, watch: object = None) -> ResultRecord:
        """Read one result, letting the broker hold the call up to ``wait`` seconds.

        Args:
            task_id: The task.
            wait: Longest wait for the task to be ready, in seconds.
            watch: The task's result watch from :meth:`submit`, if any: a pushed result is
                read from there without a call. When its stream ended first, the rest of the
                wait is held with GetResult on a new stream.
        """
        if isinstance(watch, ResultWatch):
            started = time.monotonic()
            if not watch.wait(wait):
                wait = 0.0  # not ready yet: read the state as it is now
            elif watch.result is not None:
                return codec.result_record(watch.result)
            else:
                wait = max(0.0, wait - (time.monotonic() - started))
        request = client_pb2.GetResultRequest(task_id=task_id, wait_ms=codec.ms(wait))
        try:
            reply = _once_more(lambda: self._get_result(request, wait))
        except TaskNotFound:
            return ResultRecord(task_id=task_id, state=states.UNKNOWN)
        return codec.result_record(reply.result)

    def _get_result(
        self, request: client_pb2.GetResultRequest, wait: float
    ) -> client_pb2.GetResultResponse:
        stream = self._session_for(request)
        if stream is not None:
            call = client_pb2.SessionCall(get_result=request)
            return self._on_session(stream, call, "GetResult", wait).get_result
        return self._invoke("GetResult", lambda s, t: s.GetResult(request, timeout=t), wait)

    def get_results(self, task_ids: Sequence[str], wait: float = 0.0) -> list[ResultRecord]:
        """Read many results, held up to ``wait`` seconds until all are ready.

        One call, unless the results are too large for one answer: the broker then says how
        many it left out, and they are asked for again (without waiting; they were waited for).
        """
        records: list[ResultRecord] = []
        while True:
            reply = self._get_results_once(task_ids, wait)
            records += [codec.result_record(result) for result in reply.results]
            if not reply.omitted or not reply.results:
                return records
            task_ids, wait = task_ids[len(reply.results) :], 0.0

    def _get_results_once(
        self, task_ids: Sequence[str], wait: float
    ) -> client_pb2.GetResultsResponse:
        request = client_pb2.GetResultsRequest(task_ids=task_ids, wait_ms=codec.ms(wait))
        return self._invoke("GetResults", lambda s, t: s.GetResults(request, timeout=t), wait)

    def revoke(self, task_ids: Sequence[str], terminate: bool, reason: str) -> list[str]:
        """Revoke tasks; returns one outcome per id (``revoked``, ``cancel-sent``, ...)."""
        parts = id_slices(task_ids)
        return [name for part in parts for name in self._revoke(part, terminate, reason)]

    def _revoke(self, task_ids: Sequence[str], terminate: bool, reason: str) -> list[str]:
        request = client_pb2.RevokeRequest(task_ids=task_ids, terminate=terminate, reason=reason)
        reply = self._invoke("Revoke", lambda stub, t: stub.Revoke(request, timeout=t))
        return codec.revoke_outcomes(reply)

    def forget(self, task_ids: Sequence[str]) -> int:
        """Drop stored results; returns how many existed."""
        return sum(self._forget(part) for part in id_slices(task_ids))

    def control_workers(
        self, request: admin_pb2.ControlWorkersRequest, wait: float
    ) -> admin_pb2.ControlWorkersResponse:
        """Inspect or control workers (AdminService; admin role), gathering for ``wait`` s."""
        return self._invoke(
            "ControlWorkers", lambda _, t: self._admin().ControlWorkers(request, timeout=t), wait
        )

    def set_rate_limit(
        self, request: admin_pb2.SetRateLimitRequest
    ) -> admin_pb2.SetRateLimitResponse:
        """Override a task's global rate limit at the broker (AdminService; admin role)."""
        return self._invoke(
            "SetRateLimit", lambda _, t: self._admin().SetRateLimit(request, timeout=t)
        )

    def _admin(self) -> admin_pb2_grpc.AdminServiceStub:
        channel = self._channel
        if channel is None:  # closed by another thread since the stub was ready
            raise BrokerUnavailable("the client was closed")
        return admin_pb2_grpc.AdminServiceStub(channel)

    def _forget(self, task_ids: Sequence[str]) -> int:
        request = client_pb2.ForgetRequest(task_ids=task_ids)
        return self._invoke("Forget", lambda stub, t: stub.Forget(request, timeout=t)).forgotten

    def server_info(self) -> ServerInfo:
        """The broker's version and limits (asked once, then remembered)."""
        if self._info is None:
            request = client_pb2.ServerInfoRequest()
            reply = self._invoke("ServerInfo", lambda s, t: s.ServerInfo(request, timeout=t))
            self._info = codec.server_info(reply)
        return self._info

    def close(self) -> None:
        """Close the channel; a later call opens a new one."""
        with self._lock:
            channel, self._channel, self._stub = self._channel, None, None
            stream, self._stream = self._stream, None
            self._connected = False
        if stream is not None:
            stream.close()
        if channel is not None:
            channel.close()

    def _session_for(self, request: Message) -> CallStream | None:
        """The open session stream, or None when the broker has none or the call is too big."""
        stub = self._ready_stub()
        if not _fits_session(self._info, request):
            return None
        with self._lock:
            if self._stream is None or self._stream.broken:
                self._stream = CallStream(stub, self._target)
            return self._stream

    def _submit_on_session(
        self, stream: CallStream, spec: SubmitSpec, request: client_pb2.SubmitRequest
    ) -> Submitted:
        watch = stream.watch(spec.task_id) if _watchable(spec) else None
        call = client_pb2.SessionCall(submit=request, watch=watch is not None)
        try:
            reply = self._on_session(stream, call, "Submit")
        except Exception:
            stream.unwatch(spec.task_id)
            raise
        return _submitted(stream, spec, reply, watch)

    def _on_session(
        self, stream: CallStream, call: client_pb2.SessionCall, method: str, wait: float = 0.0
    ) -> client_pb2.SessionReply:
        try:
            return stream.call(call, method, self._config.rpc_timeout + wait)
        except BrokerUnavailable:
            self._connected = False  # the next call waits for the connection again
            raise

    def _invoke(
        self,
        method: str,
        call: Callable[[client_pb2_grpc.TaskServiceStub, float], R],
        wait: float = 0.0,
    ) -> R:
        stub = self._ready_stub()
        try:
            return call(stub, self._config.rpc_timeout + wait)
        except grpc.RpcError as error:
            failure = rpc_error(error, method, self._target)
            if isinstance(failure, BrokerUnavailable):
                self._connected = False  # the next call waits for the connection again
            raise failure from None

    def _ready_stub(self) -> client_pb2_grpc.TaskServiceStub:
        with self._lock:
            if self._pid != os.getpid():  # forked: what we hold belongs to the parent
                self._pid = os.getpid()
                self._channel, self._stub, self._stream = None, None, None
                self._connected = False
            if self._channel is None or self._stub is None:
                logger.debug("opening channel to %s", self._target)
                self._channel = open_channel(self._target, self._config.security, CHANNEL_OPTIONS)
                self._stub = client_pb2_grpc.TaskServiceStub(self._channel)
            stub = self._stub
        if not self._connected:
            # A first ServerInfo call that waits for the connection proves the broker is there
            # (and fetches its limits). grpc.channel_ready_future would do the waiting with a
            # polling thread that crashes if the channel is closed while it runs.
            try:
                reply = stub.ServerInfo(
                    client_pb2.ServerInfoRequest(),
                    timeout=self._config.connect_timeout,
                    wait_for_ready=True,
                )
            except grpc.RpcError as error:
                failure = rpc_error(error, "ServerInfo", self._target)
                if isinstance(failure, BrokerUnavailable):
                    failure = BrokerUnavailable(_unreachable(self._target, self._config))
                raise failure from None
            self._info = codec.server_info(reply)
            self._connected = True
        return stub


class AsyncTransport:
    """Awaitable calls to one broker, with one ``grpc.aio`` channel per event loop.

    An aio channel belongs to the loop it was created on, so each loop that uses the app gets
    its own; channels of loops that have since closed are dropped.
    """

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._target = config.target
        self._stubs: dict[asyncio.AbstractEventLoop, _LoopConnection] = {}
        self._info: ServerInfo | None = None

    async def submit(self, specs: Sequence[SubmitSpec]) -> list[Submitted]:
        """Submit tasks: one ``Submit`` for one spec, one ``SubmitMany`` for several.

        One spec is sent again if the broker went away meanwhile (see :func:`_once_more`).
        """
        if len(specs) == 1:
            one = codec.submit_request(specs[0])
            return [await _once_more_async(lambda: self._submit_one(specs[0], one))]
        many = codec.submit_many_request(specs)
        replies = await self._invoke("SubmitMany", lambda s, t: s.SubmitMany(many, timeout=t))
        return [codec.submitted(reply) for reply in replies.results]

    async def _submit_one(self, spec: SubmitSpec, request: client_pb2.SubmitRequest) -> Submitted:
        stream = await self._session_for(request)
        if stream is not None:
            return await self._submit_on_session(stream, spec, request)
        reply = await self._invoke("Submit", lambda s, t: s.Submit(request, timeout=t))
        return codec.submitted(reply)

    async def submit_chunks(
        self, chunks: Iterable[Sequence[SubmitSpec]], in_flight: int = SUBMIT_WINDOW
    ) -> list[Submitted]:
        """Like :meth:`Transport.submit_chunks`: pipelined ``SubmitMany`` calls, in order."""
        stub = await self._ready_stub()
        timeout = self._config.rpc_timeout
        sent: deque[ChunkCall[_AioSubmitMany]] = deque()
        submitted: list[Submitted] = []
        start = 0
        for chunk in chunks:
            call = stub.SubmitMany(codec.submit_many_request(chunk), timeout=timeout)
            sent.append(ChunkCall(start, len(chunk), call))
            start += len(chunk)
            if len(sent) >= in_flight:
                submitted += await self._chunk_answers(sent)
        while sent:
            submitted += await self._chunk_answers(sent)
        return submitted

    async def _chunk_answers(self, sent: deque[ChunkCall[_AioSubmitMany]]) -> list[Submitted]:
        oldest = sent.popleft()
        try:
            reply = await oldest.call
        except grpc.aio.AioRpcError as error:
            failure = rpc_error(error, "SubmitMany", self._target)
            if isinstance(failure, BrokerUnavailable):
                for connection in self._stubs.values():
                    connection.connected = False
            later = [(c.start, c.count, await c.call.code() is grpc.StatusCode.OK) for c in sent]
            raise chunk_failure(failure, oldest.start, oldest.count, later) from None
        return [codec.submitted(answer) for answer in reply.results]

    async def get_result(
        self, task_id: str, wait: float = 0.0, watch: object = None
    ) -> ResultRecord:
        """Read one result, letting the broker hold the call up to ``wait`` seconds.

        See :meth:`Transport.get_result`; only a watch made on this loop's stream is used.
        """
        if isinstance(watch, AsyncResultWatch) and watch.loop is asyncio.get_running_loop():
            started = time.monotonic()
            if not await watch.wait(wait):
                wait = 0.0  # not ready yet: read the state as it is now
            elif watch.result is not None:
                return codec.result_record(watch.result)
            else:
                wait = max(0.0, wait - (time.monotonic() - started))
        request = client_pb2.GetResultRequest(task_id=task_id, wait_ms=codec.ms(wait))
        try:
            reply = await _once_more_async(lambda: self._get_result(request, wait))
        except TaskNotFound:
            return ResultRecord(task_id=task_id, state=states.UNKNOWN)
        return codec.result_record(reply.result)

    async def _get_result(
        self, request: client_pb2.GetResultRequest, wait: float
    ) -> client_pb2.GetResultResponse:
        stream = await self._session_for(request)
        if stream is not None:
            call = client_pb2.SessionCall(get_result=request)
            return (await self._on_session(stream, call, "GetResult", wait)).get_result
        return await self._invoke("GetResult", lambda s, t: s.GetResult(request, timeout=t), wait)

    async def get_results(self, task_ids: Sequence[str], wait: float = 0.0) -> list[ResultRecord]:
        """Read many results, held up to ``wait`` seconds (see :meth:`Transport.get_results`)."""
        records: list[ResultRecord] = []
        while True:
            reply = await self._get_results_once(task_ids, wait)
            records += [codec.result_record(result) for result in reply.results]
            if not reply.omitted or not reply.results:
                return records
            task_ids, wait = task_ids[len(reply.results) :], 0.0

    async def _get_results_once(
        self, task_ids: Sequence[str], wait: float
    ) -> client_pb2.GetResultsResponse:
        request = client_pb2.GetResultsRequest(task_ids=task_ids, wait_ms=codec.ms(wait))
        return await self._invoke("GetResults", lambda s, t: s.GetResults(request, timeout=t), wait)

    async def revoke(self, task_ids: Sequence[str], terminate: bool, reason: str) -> list[str]:
        """Revoke tasks; returns one outcome per id."""
        parts = id_slices(task_ids)
        return [name for part in parts for name in await self._revoke(part, terminate, reason)]

    async def _revoke(self, task_ids: Sequence[str], terminate: bool, reason: str) -> list[str]:
        request = client_pb2.RevokeRequest(task_ids=task_ids, terminate=terminate, reason=reason)
        reply = await self._invoke("Revoke", lambda s, t: s.Revoke(request, timeout=t))
        return codec.revoke_outcomes(reply)

    async def forget(self, task_ids: Sequence[str]) -> int:
        """Drop stored results; returns how many existed."""
        return sum([await self._forget(part) for part in id_slices(task_ids)])

    async def _forget(self, task_ids: Sequence[str]) -> int:
        request = client_pb2.ForgetRequest(task_ids=task_ids)
        return (await self._invoke("Forget", lambda s, t: s.Forget(request, timeout=t))).forgotten

    async def server_info(self) -> ServerInfo:
        """The broker's version and limits (asked once, then remembered)."""
        if self._info is None:
            request = client_pb2.ServerInfoRequest()
            reply = await self._invoke("ServerInfo", lambda s, t: s.ServerInfo(request, timeout=t))
            self._info = codec.server_info(reply)
        return self._info

    async def close(self) -> None:
        """Close the channel of the running loop; other loops' channels are dropped."""
        connections, self._stubs = self._stubs, {}
        loop = asyncio.get_running_loop()
        for connection_loop, connection in connections.items():
            if connection_loop is loop:
                if connection.stream is not None:
                    await connection.stream.close()
                await connection.channel.close(None)

    async def _session_for(self, request: Message) -> AsyncCallStream | None:
        """This loop's session stream, or None when the broker has none or the call is too big."""
        stub = await self._ready_stub()
        if not _fits_session(self._info or await self.server_info(), request):
            return None
        connection = self._stubs[asyncio.get_running_loop()]
        if connection.stream is None or connection.stream.broken:
            connection.stream = AsyncCallStream(stub, self._target)
        return connection.stream

    async def _submit_on_session(
        self, stream: AsyncCallStream, spec: SubmitSpec, request: client_pb2.SubmitRequest
    ) -> Submitted:
        watch = stream.watch(spec.task_id) if _watchable(spec) else None
        call = client_pb2.SessionCall(submit=request, watch=watch is not None)
        try:
            reply = await self._on_session(stream, call, "Submit")
        except Exception:
            stream.unwatch(spec.task_id)
            raise
        return _submitted(stream, spec, reply, watch)

    async def _on_session(
        self, stream: AsyncCallStream, call: client_pb2.SessionCall, method: str, wait: float = 0.0
    ) -> client_pb2.SessionReply:
        try:
            return await stream.call(call, method, self._config.rpc_timeout + wait)
        except BrokerUnavailable:
            for connection in self._stubs.values():
                connection.connected = False
            raise

    async def _ready_stub(self) -> client_pb2_grpc.TaskServiceAsyncStub:
        loop = asyncio.get_running_loop()
        connection = self._stubs.get(loop)
        if connection is None:
            # Forget channels whose loop is gone; they cannot be closed from here.
            self._stubs = {k: v for k, v in self._stubs.items() if not k.is_closed()}
            channel = open_aio_channel(self._target, self._config.security, CHANNEL_OPTIONS)
            connection = _LoopConnection(channel)
            self._stubs[loop] = connection
        if not connection.connected:
            try:
                await asyncio.wait_for(
                    connection.channel.channel_ready(), self._config.connect_timeout
                )
            except TimeoutError:
                raise BrokerUnavailable(_unreachable(self._target, self._config)) from None
            connection.connected = True
        return connection.stub

    async def _invoke(
        self,
        method: str,
        call: Callable[[client_pb2_grpc.TaskServiceAsyncStub, float], Awaitable[R]],
        wait: float = 0.0,
    ) -> R:
        stub = await self._ready_stub()
        try:
            return await call(stub, self._config.rpc_timeout + wait)
        except grpc.aio.AioRpcError as error:
            failure = rpc_error(error, method, self._target)
            if isinstance(failure, BrokerUnavailable):
                for connection in self._stubs.values():
                    connection.connected = False
            raise failure from None


class _LoopConnection:
    """One event loop's aio channel and stub."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub: client_pb2_grpc.TaskServiceAsyncStub = client_pb2_grpc.TaskServiceStub(channel)
        self.connected = False
        self.stream: AsyncCallStream | None = None


def _once_more(send: Callable[[], R]) -> R:
    """Run ``send``, and once more if the broker went away meanwhile.

    A broker that shuts down answers held waits and new calls with UNAVAILABLE at once
    (``BrokerGone``) rather than holding them. The second try opens a new connection, which
    waits up to ``connect_timeout`` for the restarted broker; only calls that are safe to repeat
    (a submit, whose task id the broker deduplicates, and a result read) go through here.
    """
    try:
        return send()
    except BrokerGone as error:
        logger.info("%s; trying once more", error)
        return send()


async def _once_more_async(send: Callable[[], Awaitable[R]]) -> R:
    """The asyncio twin of :func:`_once_more`."""
    try:
        return await send()
    except BrokerGone as error:
        logger.info("%s; trying once more", error)
        return await send()


def _fits_session(info: ServerInfo | None, request: Message) -> bool:
    """Whether ``request`` may ride the session stream of a broker described by ``info``.

    A message over the broker's limit would end the stream and every call on it, so such a
    request goes as a unary call, which fails alone with the same error.
    """
    if info is None or "session" not in info.features:
        return False
    limit = info.max_message_bytes
    return limit == 0 or request.ByteSize() + _SESSION_FRAME_BYTES <= limit


def _submitted(
    stream: CallStream | AsyncCallStream,
    spec: SubmitSpec,
    reply: client_pb2.SessionReply,
    watch: ResultWatch | AsyncResultWatch | None,
) -> Submitted:
    """A submit's answer on the session, with the watch kept only if the broker watches too.

    It may have answered with another task's id, or be watching too many already.
    """
    if watch is not None and not (reply.watching and reply.submit.task_id == spec.task_id):
        stream.unwatch(spec.task_id)
        watch = None
    return codec.submitted(reply.submit, watch)


def _watchable(spec: SubmitSpec) -> bool:
    """Whether to have the broker push this task's result as soon as it is ready.

    Not for tasks whose result is not kept, nor for tasks scheduled for later (a watch would
    hold a waiter at the broker until then), nor with an idempotency key (the broker may answer
    with another task's id).
    """
    options = spec.options
    return not (options.ignore_result or options.eta is not None or options.idempotency_key)


def _unreachable(target: str, config: ClientConfig) -> str:
    tls = "grpcs:// (TLS)" if config.security.tls else "plain text"
    return (
        f"cannot reach the broker at {target} within {config.connect_timeout:g}s over {tls} "
        "(is `python -m broker serve` running there, with the same TLS setting? "
        "set CELERIAC_BROKER or broker=...)"
    )
