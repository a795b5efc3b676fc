"""Calls multiplexed on one ``TaskService.Session`` stream.

A unary call costs about half a millisecond of gRPC's Python runtime, most of it setting up and
tearing down the call; a message on a stream that is already open costs well under half of
that, at each end. ``delay()`` and ``get()`` one task at a time are exactly such small calls, so
the transports send Submit and GetResult on a session stream when the broker offers one
(feature ``"session"``) and the message fits, and everything else as unary calls.

All threads of a process share one stream. A call takes the next call id, parks a waiter under
it, queues its message and sleeps until the reader thread hands it the reply carrying the same
id. When the stream breaks, every parked call fails as its unary twin would have (usually
``BrokerUnavailable``), and the transport opens a new stream for the next call.

A submit can also *watch* its task (``SessionCall.watch``): the broker pushes the result when
the task is ready and the reader drops it into the task's :class:`ResultWatch`, where ``get()``
finds it without a call. The stream holds watches weakly; the ``AsyncResult`` holds them
strongly, so a result nobody can read any more is dropped when it arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import grpc
import grpc.aio

from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2
from client.status import error_from_number, error_from_status, error_info

logger = logging.getLogger(__name__)


# Why a stream ended, as the code and message its calls fail with.
class _Ending(NamedTuple):
    """How a stream ended: its status, and the broker's reason when it sent one."""

    code: grpc.StatusCode
    details: str
    reason: str = ""
    metadata: Mapping[str, str] = MappingProxyType({})

    def error(self, method: str, target: str) -> Exception:
        return error_from_status(
            self.code, self.details, method, target, reason=self.reason, metadata=self.metadata
        )


_CLOSED_BY_BROKER = _Ending(grpc.StatusCode.UNAVAILABLE, "the broker ended the session stream")


class _Waiter:
    """One parked call: a lock the reader releases once the reply (or the stream's end) is in.

    A bare lock is the cheapest hand-off between two threads that Python has; an Event or a
    Future would wrap the same lock in a condition.
    """

    __slots__ = ("_arrived", "ending", "reply")

    def __init__(self) -> None:
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self.reply: client_pb2.SessionReply | None = None
        self.ending: _Ending | None = None

    def wait(self, timeout: float) -> bool:
        return self._arrived.acquire(timeout=timeout)

    def resolve(self, reply: client_pb2.SessionReply) -> None:
        self.reply = reply
        self._arrived.release()

    def fail(self, ending: _Ending) -> None:
        self.ending = ending
        self._arrived.release()


class ResultWatch:
    """Where a watched task's pushed result lands.

    ``result`` stays None when the stream ended first, or when the broker pushed state UNKNOWN
    (the result was too large to push): the reader should then ask with GetResult.
    """

    __slots__ = ("__weakref__", "_arrived", "_in", "result", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        # A bare lock held until delivery, as in _Waiter: an Event would cost the round trip
        # ~10 µs more (a Condition and a fresh lock per wait). Once in, it stays released.
        self._arrived = threading.Lock()
        self._arrived.acquire()
        self._in = False
        self.result: tasks_pb2.TaskResult | None = None

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the push (or the stream's end); True once in."""
        if self._in:
            return True
        if not self._arrived.acquire(timeout=max(0.0, timeout)):
            return False
        self._arrived.release()  # open for every later wait, in any thread
        return True

    def deliver(self, result: tasks_pb2.TaskResult | None) -> None:
        """Hand over the pushed result, or None when the stream ended without one."""
        self.result = _readable(result)
        if not self._in:
            self._in = True
            self._arrived.release()


class AsyncResultWatch:
    """The asyncio twin of :class:`ResultWatch`."""

    __slots__ = ("__weakref__", "_arrived", "loop", "result", "task_id")

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.loop = asyncio.get_running_loop()  # an asyncio.Event serves one loop only
        self._arrived = asyncio.Event()
        self.result: tasks_pb2.TaskResult | None = None

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the push (or the stream's end); True once in."""
        if not self._arrived.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return False
        return True

    def deliver(self, result: tasks_pb2.TaskResult | None) -> None:
        """Hand over the pushed result, or None when the stream ended without one."""
        self.result = _readable(result)
        self._arrived.set()


class CallStream:
    """One open session stream, shared by every thread that uses one transport.

    Args:
        stub: The TaskService stub of a connected channel.
        target: The broker address, for error messages.
    """

    def __init__(self, stub: client_pb2_grpc.TaskServiceStub, target: str) -> None:
        self._target = target
        self._outgoing: queue.SimpleQueue[client_pb2.SessionCall | None] = queue.SimpleQueue()
        self._waiting: dict[int, _Waiter] = {}
        self._call_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._ending: _Ending | None = None
        self._watches: weakref.WeakValueDictionary[str, ResultWatch] = weakref.WeakValueDictionary()
        # gRPC drains the request iterator on a thread of its own, one message at a time.
        self._replies = stub.Session(iter(self._outgoing.get, None))
        self._reader = threading.Thread(target=self._read, name="celeriac-session", daemon=True)
        self._reader.start()

    @property
    def broken(self) -> bool:
        """True once the stream has ended; open a new one for further calls."""
        return self._ending is not None

    def call(
        self, message: client_pb2.SessionCall, method: str, timeout: float
    ) -> client_pb2.SessionReply:
        """Send one call and wait up to ``timeout`` seconds for its reply.

        Args:
            message: The call; its ``call_id`` is set here.
            method: The unary twin's name, for error messages.
            timeout: The call's deadline in seconds.

        Raises:
            CeleriacError: The call failed, with the error its unary twin would have raised.
        """
        waiter = _Waiter()
        call_id = next(self._call_ids)
        with self._lock:
            if self._ending is not None:
                raise self._ending.error(method, self._target)
            self._waiting[call_id] = waiter
        message.call_id = call_id
        self._outgoing.put(message)
        if not waiter.wait(timeout):
            with self._lock:
                self._waiting.pop(call_id, None)
            raise error_from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "", method, self._target)
        return _checked(waiter.reply, waiter.ending, method, self._target)

    def watch(self, task_id: str) -> ResultWatch:
        """Register a watch before submitting with ``watch`` set: the push may beat the reply."""
        watch = ResultWatch(task_id)
        with self._lock:
            if self._ending is not None:
                watch.deliver(None)
            else:
                self._watches[task_id] = watch
        return watch

    def unwatch(self, task_id: str) -> None:
        """Forget a watch the broker did not take."""
        with self._lock:
            self._watches.pop(task_id, None)

    def close(self) -> None:
        """End the stream; parked calls fail with CANCELLED."""
        self._outgoing.put(None)
        self._replies.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped

    def _read(self) -> None:
        ending = _CLOSED_BY_BROKER
        try:
            for reply in self._replies:
                if reply.call_id == 0:
                    self._deliver(reply.ready.results)
                    continue
                # dict.pop is atomic; the lock only orders the end of the stream with new calls.
                waiter = self._waiting.pop(reply.call_id, None)
                if waiter is not None:
                    waiter.resolve(reply)
        except grpc.RpcError as error:
            ending = _ending_of(error)
        except Exception:  # the reader must fail the parked calls whatever happens
            logger.exception("reading the session stream failed")
            ending = _Ending(grpc.StatusCode.UNKNOWN, "reading the session stream failed (logged)")
        with self._lock:
            self._ending = ending
            waiting, self._waiting = self._waiting, {}
            watches = list(self._watches.values())
            self._watches.clear()
        for waiter in waiting.values():
            waiter.fail(ending)
        for watch in watches:
            watch.deliver(None)  # its reader asks with GetResult instead
        self._outgoing.put(None)  # ends gRPC's request thread if the broker ended the stream

    def _deliver(self, results: Iterable[tasks_pb2.TaskResult]) -> None:
        for result in results:
            with self._lock:
                watch = self._watches.pop(result.task_id, None)
            if watch is not None:
                watch.deliver(result)


class AsyncCallStream:
    """The asyncio twin of :class:`CallStream`, for one event loop's channel."""

    def __init__(self, stub: client_pb2_grpc.TaskServiceAsyncStub, target: str) -> None:
        self._target = target
        self._outgoing: asyncio.Queue[client_pb2.SessionCall | None] = asyncio.Queue()
        # A parked call's future gets its reply, or the stream's ending.
        self._waiting: dict[int, asyncio.Future[client_pb2.SessionReply | _Ending]] = {}
        self._call_ids = itertools.count(1)
        self._ending: _Ending | None = None
        self._watches: weakref.WeakValueDictionary[str, AsyncResultWatch] = (
            weakref.WeakValueDictionary()
        )
        self._call = stub.Session(self._requests())
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def broken(self) -> bool:
        """True once the stream has ended; open a new one for further calls."""
        return self._ending is not None

    async def call(
        self, message: client_pb2.SessionCall, method: str, timeout: float
    ) -> client_pb2.SessionReply:
        """Send one call and wait up to ``timeout`` seconds for its reply (see CallStream)."""
        if self._ending is not None:
            raise self._ending.error(method, self._target)
        call_id = next(self._call_ids)
        reply = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = reply
        message.call_id = call_id
        self._outgoing.put_nowait(message)
        try:
            async with asyncio.timeout(timeout):
                answer = await reply
        except TimeoutError:
            raise error_from_status(
                grpc.StatusCode.DEADLINE_EXCEEDED, "", method, self._target
            ) from None
        finally:
            self._waiting.pop(call_id, None)
        if isinstance(answer, _Ending):
            return _checked(None, answer, method, self._target)
        return _checked(answer, None, method, self._target)

    def watch(self, task_id: str) -> AsyncResultWatch:
        """Register a watch before submitting with ``watch`` set: the push may beat the reply."""
        watch = AsyncResultWatch(task_id)
        if self._ending is not None:
            watch.deliver(None)
        else:
            self._watches[task_id] = watch
        return watch

    def unwatch(self, task_id: str) -> None:
        """Forget a watch the broker did not take."""
        self._watches.pop(task_id, None)

    async def close(self) -> None:
        """End the stream; parked calls fail with CANCELLED."""
        self._outgoing.put_nowait(None)
        self._call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _requests(self) -> AsyncIterator[client_pb2.SessionCall]:
        while (message := await self._outgoing.get()) is not None:
            yield message

    async def _read(self) -> None:
        ending = _CLOSED_BY_BROKER
        try:
            async for reply in self._call:
                if reply.call_id == 0:
                    for result in reply.ready.results:
                        watch = self._watches.pop(result.task_id, None)
                        if watch is not None:
                            watch.deliver(result)
                    continue
                waiter = self._waiting.pop(reply.call_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
        except grpc.aio.AioRpcError as error:
            ending = _ending_of(error)
        except asyncio.CancelledError:
            ending = _Ending(grpc.StatusCode.CANCELLED, "the session stream was closed")
        self._ending = ending
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_result(ending)
        watches = list(self._watches.values())
        self._watches.clear()
        for watch in watches:
            watch.deliver(None)
        self._outgoing.put_nowait(None)


def _readable(result: tasks_pb2.TaskResult | None) -> tasks_pb2.TaskResult | None:
    """A pushed result to read, or None: UNKNOWN means "too large to push, ask for it"."""
    if result is None or result.state == tasks_pb2.TASK_STATE_UNKNOWN:
        return None
    return result


def _ending_of(error: grpc.RpcError) -> _Ending:
    if isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
        info = error_info(error.trailing_metadata() or ())
        ending = _Ending(error.code(), error.details() or "")
        return (
            ending if info is None else ending._replace(reason=info.reason, metadata=info.metadata)
        )
    return _Ending(grpc.StatusCode.UNKNOWN, str(error))


def _checked(
    reply: client_pb2.SessionReply | None, ending: _Ending | None, method: str, target: str
) -> client_pb2.SessionReply:
    """The reply, or the error it (or the stream's end) stands for, raised."""
    if reply is None:
        raise (ending or _CLOSED_BY_BROKER).error(method, target)
    if reply.WhichOneof("reply") == "error":
        error = reply.error
        raise error_from_number(
            error.code, error.message, method, target, reason=error.reason, metadata=error.metadata
        )
    return reply
