"""Glue between the core and the event loop: outbox flushing and the single loop timer.

Every adapter calls :meth:`Runtime.changed` after a core operation. At the end of that event-loop
turn the runtime writes each session's outbox to its stream as one message per kind (never
waiting to fill a batch) and re-arms one loop timer at the core's next deadline. A caller whose
result is on a critical path (a new task's assignment, ahead of the submit's answer) flushes at
once with :meth:`Runtime.flush_now`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from broker.core.broker import Broker
from broker.errors import BrokerError, ShuttingDown
from broker.service import codec
from broker.service.control import ControlRequests
from broker.service.events import EventHub
from broker.service.peers import PeerLimits
from broker.service.refusals import Refusals
from broker.service.status import status_for
from celeriac.v1 import worker_pb2

if TYPE_CHECKING:
    from broker.cluster.coordinator import Cluster
    from broker.journal.journal import Journal

logger = logging.getLogger(__name__)

# Outcome acks that found no assignments to ride with go in a message of their own this much
# later, gathered with every other session's: on a lone round trip an immediate message would
# be written ahead of the result pushed to the client, for a worker that needs it only to free
# memory (and to know what to send again after a reconnect).
_ACK_DELAY = 0.05

# What a refused call or an ended wait says during a graceful shutdown.
SHUTTING_DOWN = "the broker is shutting down; ask again once it is back"

# Timers fire this much after their deadline so that a loop clock that reads a hair early
# never finds nothing due and spins.
_TIMER_SLACK = 0.001


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Queued to a session stream to end it; ``code`` None means a clean end."""

    code: grpc.StatusCode | None = None
    details: str = ""
    # The refusal that ends the stream, sent with its ErrorInfo.
    error: BrokerError | None = None


Outgoing = asyncio.Queue[worker_pb2.BrokerMessage | StreamEnd]


class Runtime:
    """Owns the core broker on one event loop; no locks because nothing else touches it."""

    def __init__(self, broker: Broker, loop: asyncio.AbstractEventLoop) -> None:
        self.broker = broker
        self._loop = loop
        self._streams: dict[str, Outgoing] = {}
        self._flush_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self.shutting_down = False
        self.refusals = Refusals()
        self.events = EventHub(broker, broker.config.ping_interval)
        config = broker.config
        self.peers = PeerLimits(config.max_sessions_per_peer, config.max_held_calls_per_peer)
        self._shutdown_listeners: set[Callable[[], None]] = set()
        self._streams_gone: asyncio.Event | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        # None in memory-only mode: then nothing on the hot path waits for a disk.
        self.journal: Journal | None = None
        # Inspect and control requests waiting for workers' replies (AdminService).
        self.control = ControlRequests()
        # This broker's part in a cluster sharing a PostgreSQL database; None when alone.
        self.cluster: Cluster | None = None

    def check_accepting(self) -> None:
        """Raise ShuttingDown once a graceful shutdown has begun."""
        if self.shutting_down:
            raise ShuttingDown(SHUTTING_DOWN)

    def on_shutdown(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when a graceful shutdown begins (held waits and client sessions).

        Returns:
            A function that forgets the callback (call it when the waiter is done).
        """
        self._shutdown_listeners.add(callback)
        return lambda: self._shutdown_listeners.discard(callback)

    def begin_shutdown(self) -> None:
        """Refuse new work from now on, and wake everything that waits for a client."""
        self.shutting_down = True
        listeners, self._shutdown_listeners = self._shutdown_listeners, set()
        for callback in listeners:
            try:
                callback()
            except Exception:
                logger.exception("a shutdown callback failed")

    async def wait_streams_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every worker stream to end; True when they all did."""
        if not self._streams:
            return True
        self._streams_gone = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._streams_gone.wait()
        except TimeoutError:
            return False
        return True

    def end_streams(self, details: str) -> None:
        """End every worker stream still served, with UNAVAILABLE and ``details``."""
        for outgoing in self._streams.values():
            outgoing.put_nowait(StreamEnd(grpc.StatusCode.UNAVAILABLE, details))

    def check_recordable(self) -> None:
        """Raise JournalUnavailable while the journal cannot be written (refuse new work)."""
        if self.journal is not None:
            self.journal.check_writable()

    async def durable(self) -> None:
        """Return once every change the core has made so far is recorded.

        Handlers await this before they answer anything that acknowledges a change (a submit, a
        revoke, a purge): acknowledged means recorded. Without a journal (``--memory-only``) it
        returns at once, without giving up the loop.

        Raises:
            JournalUnavailable: The changes could not be written.
        """
        if self.journal is not None:
            self.changed()
            await self.journal.durable()

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop once every change made so far is recorded.

        For acknowledgements written to a stream (a worker's outcome acks) rather than
        returned from a handler. Without a journal it runs ``callback`` at once.
        """
        if self.journal is None:
            callback()
        else:
            self.changed()
            self.journal.when_durable(callback)

    def attach(self, session_id: str, outgoing: Outgoing) -> None:
        """Route ``session_id``'s outbox to ``outgoing``."""
        self._streams[session_id] = outgoing

    def detach(self, session_id: str) -> None:
        """Stop routing to a stream that ended."""
        self._streams.pop(session_id, None)
        if not self._streams and self._streams_gone is not None:
            self._streams_gone.set()

    def send(self, session_id: str, message: worker_pb2.BrokerMessage) -> bool:
        """Queue ``message`` to a session's stream now; False when that stream is gone."""
        outgoing = self._streams.get(session_id)
        if outgoing is None:
            return False
        outgoing.put_nowait(message)
        return True

    @property
    def stream_count(self) -> int:
        """Worker streams currently being served."""
        return len(self._streams)

    def acks_added(self) -> None:
        """Outcome acks were added to an outbox: make sure they go out soon, if nothing else."""
        if self._ack_timer is None:
            self._ack_timer = self._loop.call_later(_ACK_DELAY, self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_timer = None
        self._flush(acks_due=True)

    def changed(self) -> None:
        """Schedule one flush for this loop turn (cheap to call after every operation)."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_if_pending)

    def flush_now(self) -> bool:
        """Run the pending flush now instead of at the end of this turn.

        Returns:
            Whether it queued anything to a stream.
        """
        return self._flush() > 0 if self._flush_pending else False

    def _flush_if_pending(self) -> None:
        # The end-of-turn callback: nothing to do when flush_now() already ran the flush.
        if self._flush_pending:
            self._flush()

    def close(self) -> None:
        """Cancel the loop timers (the server is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _flush(self, acks_due: bool = False) -> int:
        """Queue every session's outbox to its stream; returns how many messages it queued."""
        # Runs as a bare loop callback: an exception here would skip every later session and
        # leave the timer unarmed, so each step is guarded and logged instead.
        self._flush_pending = False
        queued = 0
        try:
            outboxes = self.broker.take_outboxes(acks_due)
        except Exception:
            logger.exception("collecting session outboxes failed")
            outboxes = []
        for session, outbox in outboxes:
            outgoing = self._streams.get(session.session_id)
            if outgoing is None:
                continue
            try:
                messages = codec.outbox_to_pb(outbox, self.broker.config.max_message_bytes)
            except Exception:
                logger.exception("encoding messages for session %s failed", session.session_id)
                self.broker.workers.close(session, "internal broker error")
                outgoing.put_nowait(StreamEnd(grpc.StatusCode.INTERNAL, "internal broker error"))
                continue
            for message in messages:
                outgoing.put_nowait(message)
            queued += len(messages)
            if isinstance(outbox.drop, BrokerError):
                drop = outbox.drop
                outgoing.put_nowait(StreamEnd(status_for(drop), str(drop), drop))
            elif outbox.drop is not None:
                outgoing.put_nowait(StreamEnd(grpc.StatusCode.UNAVAILABLE, outbox.drop))
        # After the streams: a new task's assignment goes out while its row is being written.
        if self.cluster is not None:
            self.cluster.after_turn()  # queued tasks to the shared pool, in this very batch
        if self.journal is not None:
            self.journal.kick()
        self._arm_timer()
        return queued

    def _arm_timer(self) -> None:
        deadline = self.broker.next_deadline()
        if deadline is None or deadline == self._timer_deadline:
            return
        if self._timer is not None:
            if self._timer_deadline is not None and self._timer_deadline <= deadline:
                return  # the armed timer rings first and re-arms after firing
            self._timer.cancel()
        delay = max(0.0, deadline - self.broker.clock.monotonic()) + _TIMER_SLACK
        self._timer = self._loop.call_later(delay, self._on_timer)
        self._timer_deadline = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        try:
            self.broker.fire_timers()
        except Exception:
            logger.exception("timer action failed")
        self.changed()
