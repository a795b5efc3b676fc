"""One ``TaskService.Session`` stream: Submit and GetResult calls multiplexed by call id.

Calls are read and answered in order on the handler's own task, so a client calling ``delay()``
in a loop costs one read and one write per call and no task switches. A GetResult that has to
wait for its task is handed to a task of its own and answered whenever the task is ready, so it
never holds up the calls behind it. Answers go through one lock: a stream takes one write at a
time.

A call that fails is answered with a ``CallError`` carrying the status code its unary twin would
have ended with (from the one table in :mod:`broker.service.status`), and the stream carries on.

A submit may ask to *watch* its task: the broker then pushes the result on the stream as soon as
the task is ready, so ``add.delay(1, 2).get()`` costs one call instead of two, and the result
does not wait for a GetResult to arrive. Results that become ready in the same loop turn share
one pushed message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from broker.core.results import Waiter
from broker.errors import (
    BrokerError,
    HeldCallsExceeded,
    InvalidArgument,
    MessageTooLarge,
    ShuttingDown,
)
from broker.service import codec
from broker.service.decoding import decoded
from broker.service.peers import PeerLimits
from broker.service.runtime import SHUTTING_DOWN
from broker.service.shared_results import SharedResult, encoded_size
from broker.service.status import abort_with, status_for, status_number
from celeriac.v1 import client_pb2

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.service.task_service import TaskService

logger = logging.getLogger(__name__)

# Tasks one stream may watch at once (see SessionCall.watch). Each costs a waiter at the broker
# until its task finishes; past this many, submits are answered with watching=false and the
# client asks with GetResult instead.
MAX_WATCHES = 10_000

# Room for the SessionReply and ReadyResults frames around pushed results.
_PUSH_FRAME_BYTES = 64

# The stream's end marker; grpc-stubs does not declare it.
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

Context = grpc.aio.ServicerContext[client_pb2.SessionCall, client_pb2.SessionReply]


class ClientSession:
    """Serves one client's session stream until the client ends it or goes away.

    Held GetResult calls are limited per stream (``max_held_calls_per_stream``) and per peer
    (``max_held_calls_per_peer``); a client that opens more is answered RESOURCE_EXHAUSTED for
    the extra calls (its earlier calls and every other client are unaffected). A finished
    task's answer is one encoded copy shared by every call reading it (see shared_results).

    Args:
        service: Where the calls are carried out (the same methods as the unary calls).
        context: The stream.
        config: The limits; ``max_message_bytes`` is gRPC's message limit, and a larger answer
            becomes a CallError, since sending it would end the whole stream.
        peers: The per-peer counters.
    """

    def __init__(
        self, service: TaskService, context: Context, config: BrokerConfig, peers: PeerLimits
    ) -> None:
        self._service = service
        self._context = context
        self._max_message_bytes = config.max_message_bytes
        self._max_held_calls = config.max_held_calls_per_stream
        self._peers = peers
        self._peer = context.peer()
        self._write_lock = asyncio.Lock()
        self._held: set[asyncio.Task[None]] = set()
        self._watches: dict[str, Waiter] = {}
        self._ready: list[str] = []  # watched tasks that finished, waiting for the push
        self._pusher: asyncio.Task[None] | None = None
        self._task: asyncio.Task[object] | None = None
        self._reading = False
        self._stopping = False

    async def serve(self) -> None:
        """Answer calls until the client half-closes, then finish the held ones.

        A graceful shutdown of the broker ends the stream with UNAVAILABLE (reason
        SHUTTING_DOWN) once the held calls have been answered the same way: an idle client must
        not hold the broker's exit up, and its next call goes to the restarted broker.
        """
        self._task = asyncio.current_task()
        forget = self._service.on_shutdown(self._on_shutdown)
        self._stopping = self._service.shutting_down
        try:
            while not self._stopping:
                self._reading = True
                try:
                    call = await self._context.read()
                except asyncio.CancelledError:
                    if not self._stopping:
                        raise
                    _uncancel()
                    break
                finally:
                    self._reading = False
                if call is _EOF:
                    break
                await self._answer(decoded(call, client_pb2.SessionCall))
            # A client that has no more calls may still be waiting for held answers.
            if self._held:
                await asyncio.gather(*self._held)
        finally:
            forget()
            # The client went away (or the broker is stopping): held calls and watches have
            # nobody to answer, and their waiters must not outlive the stream.
            for task in self._held:
                task.cancel()
            for waiter in self._watches.values():
                waiter.cancel()
            self._watches.clear()
            if self._pusher is not None:
                self._pusher.cancel()
        if self._stopping:
            await abort_with(self._context, ShuttingDown(SHUTTING_DOWN))

    def _on_shutdown(self) -> None:
        # Held calls wake by themselves (TaskService._wait listens too); a read blocked on an
        # idle client is interrupted, while a call being answered finishes first.
        self._stopping = True
        if self._reading and self._task is not None:
            self._task.cancel()

    async def _answer(self, call: client_pb2.SessionCall) -> None:
        kind = call.WhichOneof("call")
        if kind == "get_result" and not self._service.result_is_ready(call.get_result):
            try:
                self._hold(call)
            except BrokerError as error:
                await self._send(self._refused(call.call_id, error))
            return
        reply = await self._reply(call, kind)
        if not isinstance(reply, client_pb2.SessionReply):
            await self._send(reply)
            return
        # The lock is held from here so that no push of this task's result can overtake the
        # answer while it waits for the journal.
        async with self._write_lock:
            if reply.submit.created and self._service.flush_now():
                # A new task that went straight to a worker: its assignment is on the round
                # trip's critical path and this answer is not, so the worker's stream writes
                # first (one loop turn; paired A/B, six runs: round trip -50 µs median). Only a
                # new task: its result cannot be pushed before this answer, whereas a repeated
                # task_id that has already finished has its push scheduled, and the answer
                # must go first.
                await asyncio.sleep(0)
            if kind == "submit" and not reply.HasField("error"):
                # Acknowledged means recorded: the answer waits for the journal, the assignment
                # above did not (the commit overlaps with the worker running the task).
                try:
                    await self._service.durable()
                except BrokerError as error:
                    reply = self._refused(call.call_id, error)
            await self._context.write(reply)

    def _hold(self, call: client_pb2.SessionCall) -> None:
        """Answer ``call`` once its task is ready, in a task of its own.

        Raises:
            HeldCallsExceeded: This stream or its peer holds as many calls as allowed.
        """
        if len(self._held) >= self._max_held_calls:
            raise HeldCallsExceeded(
                f"session full: {len(self._held)} GetResult calls are held on this stream "
                f"(max_held_calls_per_stream={self._max_held_calls})",
                limit="max_held_calls_per_stream",
                max=self._max_held_calls,
                value=len(self._held) + 1,
            )
        address = self._peers.take_call(self._peer)
        task = asyncio.create_task(self._answer_later(call))
        self._held.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._held.discard(task)
            self._peers.release_call(address)

        task.add_done_callback(done)

    async def _answer_later(self, call: client_pb2.SessionCall) -> None:
        reply = await self._reply(call, "get_result")
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._send(reply)  # the stream may have ended while this call was held

    async def _reply(self, call: client_pb2.SessionCall, kind: str | None) -> Reply:
        call_id = call.call_id
        try:
            if kind == "submit":
                submitted = await self._service.submit(call.submit)
                watching = call.watch and self._watch(submitted.task_id)
                return client_pb2.SessionReply(call_id=call_id, submit=submitted, watching=watching)
            if kind == "get_result":
                record = await self._service.get_result(call.get_result)
                if record.ready:  # encoded when it is sent, once for every reader
                    return SharedAnswer(self._service.shared_results.of(record), call_id)
                answer = client_pb2.GetResultResponse(result=codec.result_to_pb(record))
                reply = client_pb2.SessionReply(call_id=call_id, get_result=answer)
                return self._fitting(reply, call_id)
            raise InvalidArgument("SessionCall has no call set (expected submit or get_result)")
        except BrokerError as error:
            return self._refused(call_id, error)
        except Exception:
            logger.exception("unexpected error answering a session call")
            internal = client_pb2.CallError(
                code=status_number(grpc.StatusCode.INTERNAL),
                message="internal broker error (logged)",
                reason="INTERNAL",
            )
            return client_pb2.SessionReply(call_id=call_id, error=internal)

    def _watch(self, task_id: str) -> bool:
        """Push ``task_id``'s result once it is ready; False when the stream has too many."""
        if task_id in self._watches:
            return True
        if len(self._watches) >= MAX_WATCHES:
            return False
        waiter = self._service.watch(task_id, lambda: self._on_ready(task_id))
        if waiter is None:
            self._on_ready(task_id)  # ready already (a duplicate of a finished task)
        else:
            self._watches[task_id] = waiter
        return True

    def _on_ready(self, task_id: str) -> None:
        # Called from inside a core operation (a worker's report): only note it and schedule.
        self._watches.pop(task_id, None)
        self._ready.append(task_id)
        if self._pusher is None:
            self._pusher = asyncio.get_running_loop().create_task(self._push())

    async def _push(self) -> None:
        try:
            while self._ready:
                ready, self._ready = self._ready, []
                for message in self._service.ready_results(ready, self._push_budget()):
                    await self._send(client_pb2.SessionReply(ready=message))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the stream ended; serve() cleans up
        finally:
            self._pusher = None

    def _push_budget(self) -> int:
        return self._max_message_bytes - _PUSH_FRAME_BYTES

    def _fitting(self, reply: client_pb2.SessionReply, call_id: int) -> client_pb2.SessionReply:
        """``reply`` (a message or pre-encoded), or a CallError if it is over the message limit."""
        size = encoded_size(reply)
        if size <= self._max_message_bytes:
            return reply
        error = MessageTooLarge(
            f"the answer ({size} bytes) is over the broker's message limit "
            f"(max_message_bytes={self._max_message_bytes})",
            limit="max_message_bytes",
            max=self._max_message_bytes,
            value=size,
        )
        return self._refused(call_id, error)

    def _refused(self, call_id: int, error: BrokerError) -> client_pb2.SessionReply:
        self._service.refusals.record(error, "TaskService.Session")
        return _error_reply(call_id, error)

    async def _send(self, reply: Reply) -> None:
        async with self._write_lock:
            if isinstance(reply, SharedAnswer):
                # Encoded under the lock: one answer's bytes at a time, however many wait.
                reply = self._fitting(reply.shared.session_reply(reply.call_id), reply.call_id)
            await self._context.write(reply)


@dataclass(frozen=True, slots=True)
class SharedAnswer:
    """A GetResult answer of a finished task, to be encoded when it is sent."""

    shared: SharedResult
    call_id: int


Reply = client_pb2.SessionReply | SharedAnswer


def _uncancel() -> None:
    """Take back the cancel that interrupted a read, so later timeouts in this task still work."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _error_reply(call_id: int, error: BrokerError) -> client_pb2.SessionReply:
    message = client_pb2.CallError(
        code=status_number(status_for(error)),
        message=str(error),
        reason=error.reason,
        metadata=error.metadata,
    )
    return client_pb2.SessionReply(call_id=call_id, error=message)
