"""Live events for the browser: Server-Sent Events fed by the broker's event hub.

Each open page is one :class:`~broker.service.events.Subscriber` of the hub, the same as an
``AdminService.Events`` call: a bounded buffer (``--events-buffer``) on the loop, so a slow
browser loses events (counted, and the next event says how many) and never slows the broker.
The request's thread waits for the next event on the loop and writes it out; a comment line
every :data:`KEEPALIVE_SECONDS` finds browsers that went away. At most :data:`MAX_STREAMS` pages
follow at once, each holding one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Generator

from broker.errors import LimitExceeded
from broker.service.events import BrokerEvent, EventHub, Subscriber
from broker.service.loop_calls import LoopUnavailable, call_on_loop, wait_on_loop

KEEPALIVE_SECONDS = 15.0
MAX_STREAMS = 32
# What the browser waits before reconnecting after the stream ends.
RETRY_MILLISECONDS = 2000


class EventStreams:
    """The open event streams of one HTTP port."""

    def __init__(
        self, hub: EventHub, loop: asyncio.AbstractEventLoop, buffer: int, max_streams: int
    ) -> None:
        self._hub = hub
        self._loop = loop
        self._buffer = buffer
        self._slots = threading.BoundedSemaphore(max_streams)
        self._max_streams = max_streams
        self._closing = threading.Event()

    def open(self) -> StreamBody:
        """Subscribe and return the stream's body; closing it unsubscribes.

        Raises:
            LimitExceeded: :data:`MAX_STREAMS` streams are open already.
        """
        if not self._slots.acquire(blocking=False):
            raise LimitExceeded(
                f"{self._max_streams} event streams are open already; close a dashboard tab"
            )
        try:
            subscriber = call_on_loop(self._loop, self._subscribe)
        except BaseException:
            self._slots.release()
            raise

        def end() -> None:
            self._slots.release()
            # A closed loop has nothing left to unsubscribe from.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._hub.unsubscribe, subscriber)

        return StreamBody(self._chunks(subscriber), end)

    def close(self) -> None:
        """End every stream at its next event or keep-alive (the port is stopping)."""
        self._closing.set()

    def _subscribe(self) -> Subscriber:
        subscriber = Subscriber((), (), (), self._buffer)
        self._hub.subscribe(subscriber)
        return subscriber

    def _chunks(self, subscriber: Subscriber) -> Generator[bytes, None, None]:
        yield f"retry: {RETRY_MILLISECONDS}\n: subscribed\n\n".encode()
        while not self._closing.is_set():
            try:
                got = wait_on_loop(self._loop, _next(subscriber), KEEPALIVE_SECONDS * 2)
            except LoopUnavailable:
                return
            yield b": keep-alive\n\n" if got is None else _message(*got)


class StreamBody:
    """One stream's response body.

    :meth:`close` (the WSGI server calls it) cleans up even when the body was never iterated.
    """

    def __init__(self, chunks: Generator[bytes, None, None], end: Callable[[], None]) -> None:
        self._chunks = chunks
        self._end: Callable[[], None] | None = end

    def __iter__(self) -> StreamBody:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """Stop the stream: unsubscribe and free its place (once)."""
        self._chunks.close()
        end, self._end = self._end, None
        if end is not None:
            end()


async def _next(subscriber: Subscriber) -> tuple[BrokerEvent, int] | None:
    try:
        async with asyncio.timeout(KEEPALIVE_SECONDS):
            return await subscriber.next()
    except TimeoutError:
        return None


def _message(event: BrokerEvent, dropped: int) -> bytes:
    data = {
        "kind": event.kind,
        "at": event.at,
        "task_id": event.task_id,
        "task_name": event.task_name,
        "queue": event.queue,
        "worker_id": event.worker_id,
        "detail": event.detail,
        "active": event.active,
        "concurrency": event.concurrency,
        "runtime": event.runtime,
        "dropped": dropped,
    }
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
