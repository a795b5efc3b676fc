"""One session stream with the broker: open it, read broker events, write worker messages.

A `Session` lives from Hello to the end of one `WorkerService.Session` call. Reading happens in
the caller's task (`events()`); writing goes through an outbox that gRPC drains as the call's
request iterator, so messages keep their order and the stream never has two writers.
Reconnecting is the worker's job (`worker.runner`), not the session's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from celeriac.v1 import worker_pb2, worker_pb2_grpc
from worker import codec
from worker.errors import BrokerUnavailable, SessionRefused, from_rpc_error

logger = logging.getLogger(__name__)


class Session:
    """One open `WorkerService.Session` stream."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        """Prepare a session on `channel`; nothing is sent until `open()`."""
        self._stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self._outbox: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()
        self._call: grpc.aio.StreamStreamCall[worker_pb2.WorkerMessage, worker_pb2.BrokerMessage]
        self._responses: AsyncIterator[worker_pb2.BrokerMessage] | None = None
        # From the Welcome: every job assigned on this session carries its result limit.
        self._max_payload_bytes: int | None = None

    async def open(self, hello: worker_pb2.WorkerMessage, timeout: float) -> codec.Welcome:
        """Send Hello and wait for Welcome.

        Args:
            hello: The Hello message (see `codec.hello`).
            timeout: How long to wait for the broker's Welcome.

        Returns:
            The Welcome.

        Raises:
            BrokerUnavailable: The broker cannot be reached or did not answer in time.
            SessionRefused: The broker refused the session.
        """
        self._outbox.put_nowait(hello)
        # gRPC drains the outbox itself, in order, on its own task: one writer, no locking.
        self._call = self._stub.Session(self._outgoing())
        self._responses = aiter(self._call)
        try:
            async with asyncio.timeout(timeout):
                first = await anext(self._responses)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        except StopAsyncIteration as exc:
            raise BrokerUnavailable("the broker closed the session before welcoming it") from exc
        except TimeoutError as exc:
            self.abort()
            raise BrokerUnavailable(f"no Welcome from the broker within {timeout}s") from exc
        event = codec.decode(first)
        if not isinstance(event, codec.Welcome):
            self.abort()
            raise SessionRefused(f"expected Welcome, the broker sent {type(event).__name__}")
        self._max_payload_bytes = event.limits.largest_body
        return event

    async def events(self) -> AsyncIterator[codec.BrokerEvent]:
        """Yield broker events until the stream ends.

        Raises:
            BrokerUnavailable: The stream broke or the broker ended it.
            SessionRefused: The broker ended it with a status retrying cannot fix.
        """
        assert self._responses is not None
        try:
            async for message in self._responses:
                event = codec.decode(message, self._max_payload_bytes)
                if event is None:
                    logger.debug("ignoring a broker message of an unknown kind")
                    continue
                yield event
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc
        raise BrokerUnavailable("the broker ended the session")

    def send(self, message: worker_pb2.WorkerMessage) -> None:
        """Queue a message for sending (never blocks)."""
        self._outbox.put_nowait(message)

    def close(self) -> None:
        """Half-close the stream after everything queued so far has been sent."""
        self._outbox.put_nowait(None)

    def abort(self) -> None:
        """Cancel the call now."""
        if self._responses is not None:
            self._call.cancel()

    async def _outgoing(self) -> AsyncIterator[worker_pb2.WorkerMessage]:
        while (message := await self._outbox.get()) is not None:
            yield message
