"""WorkerService: the bidirectional Session stream of one worker.

The handler reads and writes concurrently: a reader task applies each incoming message to the
core, while the handler itself writes whatever the runtime queues for this session (assignments,
cancels, rejections, pings, drain). A malformed message ends THIS stream with a clear status;
every other stream and call carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import grpc

import broker as broker_package
from broker.core.sessions import Session as WorkerSession
from broker.errors import BrokerError, InvalidArgument, ProtocolViolation, SessionsExceeded
from broker.service import codec
from broker.service.decoding import decoded
from broker.service.events import WORKER_OFFLINE, WORKER_ONLINE
from broker.service.runtime import Outgoing, Runtime, StreamEnd
from broker.service.status import abort_with, status_for
from celeriac.v1 import worker_pb2, worker_pb2_grpc

logger = logging.getLogger(__name__)

# The stream's end marker; grpc-stubs does not declare it.
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

Context = grpc.aio.ServicerContext[worker_pb2.WorkerMessage, worker_pb2.BrokerMessage]


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):
    """Serves worker sessions."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._core = runtime.broker
        self.refusals = runtime.refusals

    async def Session(  # type: ignore[override]
        self, request_iterator: object, context: Context
    ) -> None:
        """Run one worker session until the stream ends."""
        try:
            sessions = self._runtime.peers.session(context.peer())
            with sessions:
                await self._serve(context)
        except SessionsExceeded as error:
            self.refusals.record(error, "WorkerService.Session")
            await abort_with(context, error)

    async def _serve(self, context: Context) -> None:
        try:
            session, kept = await self._open(context)
        except BrokerError as error:
            self.refusals.record(error, "WorkerService.Session")
            await abort_with(context, error)
        if session is None:
            return
        outgoing: Outgoing = asyncio.Queue()
        outgoing.put_nowait(self._welcome(session, kept))
        self._runtime.attach(session.session_id, outgoing)
        self._runtime.events.worker_event(WORKER_ONLINE, session)
        reader = asyncio.create_task(self._read(context, session, outgoing))
        pinger = asyncio.create_task(self._ping(session, outgoing))
        end = StreamEnd(None, "stream ended")
        try:
            self._runtime.changed()
            end = await self._write(context, outgoing)
        except asyncio.CancelledError:
            end = StreamEnd(None, "cancelled by peer")
            raise
        finally:
            # Released before the status is sent: sending it waits for the peer to read, and a
            # stuck peer must not keep the session (or its leases) here meanwhile.
            reader.cancel()
            pinger.cancel()
            self._runtime.detach(session.session_id)
            self._core.workers.close(session, end.details)
            self._runtime.events.worker_event(WORKER_OFFLINE, session, end.details)
            self._runtime.changed()
        if end.error is not None:
            await abort_with(context, end.error)
        if end.code is not None:
            await context.abort(end.code, end.details)

    async def _open(self, context: Context) -> tuple[WorkerSession | None, list[str]]:
        timeout = self._core.config.ping_timeout
        try:
            async with asyncio.timeout(timeout):
                first = await context.read()
        except TimeoutError:
            raise ProtocolViolation(
                f"no Hello within {timeout:g} s of opening the session"
            ) from None
        if first is _EOF:
            return None, []
        first = decoded(first, worker_pb2.WorkerMessage)
        if first.WhichOneof("kind") != "hello":
            raise ProtocolViolation("the first message of a session must be a Hello")
        self._runtime.check_accepting()
        hello = codec.hello_from_pb(first.hello)
        cluster = self._runtime.cluster
        if cluster is not None and hello.held_lease_ids:  # moved here from another broker?
            await cluster.adopt_leases(hello.worker_id, hello.held_lease_ids)
        session, kept = self._core.workers.open(hello)
        return session, kept

    def _welcome(self, session: WorkerSession, kept: list[str]) -> worker_pb2.BrokerMessage:
        config = self._core.config
        welcome = worker_pb2.Welcome(
            session_id=session.session_id,
            ping_interval_ms=int(config.ping_interval * 1000),
            ping_timeout_ms=int(config.ping_timeout * 1000),
            kept_lease_ids=kept,
            broker_version=broker_package.__version__,
            max_payload_bytes=config.max_payload_bytes,
            max_message_bytes=config.max_message_bytes,
            acks_outcomes=True,
        )
        return worker_pb2.BrokerMessage(welcome=welcome)

    async def _write(self, context: Context, outgoing: Outgoing) -> StreamEnd:
        # A peer that takes no message for a whole ping timeout is as gone as one that sends
        # none: without this bound a vanished or stuck worker would hold the handler forever.
        timeout = self._core.config.ping_timeout
        while True:
            message = await outgoing.get()
            if isinstance(message, StreamEnd):
                return message
            try:
                async with asyncio.timeout(timeout):
                    await context.write(message)
            except TimeoutError:
                return StreamEnd(
                    grpc.StatusCode.UNAVAILABLE, f"worker did not read its stream for {timeout:g} s"
                )

    async def _read(self, context: Context, session: WorkerSession, outgoing: Outgoing) -> None:
        try:
            while True:
                message = await context.read()
                if message is _EOF:
                    outgoing.put_nowait(StreamEnd(None, "worker closed the stream"))
                    return
                self._apply(session, decoded(message, worker_pb2.WorkerMessage))
                self._runtime.changed()
        except BrokerError as error:
            self.refusals.record(error, f"worker session {session.session_id}")
            outgoing.put_nowait(StreamEnd(status_for(error), str(error), error))
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError:
            outgoing.put_nowait(StreamEnd(None, "stream broken"))
        except Exception:
            logger.exception("worker session %s failed", session.session_id)
            outgoing.put_nowait(StreamEnd(grpc.StatusCode.INTERNAL, "internal broker error"))

    def _apply(self, session: WorkerSession, message: worker_pb2.WorkerMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "report":
            report = codec.report_from_pb(message.report)
            self._core.workers.report(session, report)
            if report.outcomes:
                self._ack_outcomes(session, [outcome.lease_id for outcome in report.outcomes])
        elif kind == "pong":
            self._core.workers.touch(session)
        elif kind == "control_reply":
            reply = message.control_reply
            if reply.concurrency:  # a pool grow or shrink: show the new size
                self._core.workers.resized(session, reply.concurrency)
            self._runtime.control.deliver(session.session_id, reply)
        elif kind == "hello":
            raise ProtocolViolation("Hello may only be sent once per session")
        else:
            raise InvalidArgument("WorkerMessage has no kind set")

    def _ack_outcomes(self, session: WorkerSession, lease_ids: list[str]) -> None:
        """Tell the worker it may forget these outcomes, once they are recorded.

        Applied and rejected alike (a rejection went out already): either way sending one again
        would change nothing. The acks join the session's outbox and ride with its next
        assignments, or go in one OutcomeAcks message a moment later (Runtime.acks_added).
        """

        def acknowledge() -> None:
            if not session.closed:
                session.outbox.outcome_acks += lease_ids
                self._runtime.acks_added()

        self._runtime.when_durable(acknowledge)

    async def _ping(self, session: WorkerSession, outgoing: Outgoing) -> None:
        """Ping a worker that holds tasks and has been quiet for a ping interval.

        A worker holding tasks must show that its event loop is alive, or its tasks are
        requeued (the core's liveness check). An idle one is left alone: gRPC's keepalive
        (server.keepalive_options) already notices a dead host or a cut network without
        waking Python, and a busy one that reports is alive by definition.
        """
        interval = self._core.config.ping_interval
        clock = self._core.clock
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(interval)
                if session.leases and clock.monotonic() - session.last_seen >= interval:
                    nonce = random.getrandbits(63)
                    outgoing.put_nowait(worker_pb2.BrokerMessage(ping=worker_pb2.Ping(nonce=nonce)))
