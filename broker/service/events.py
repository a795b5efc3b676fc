"""The events stream's fan-out: core task events and worker events to subscribers and listeners.

The core calls its sink on every task transition, but only while a sink is set: with no
subscriber and no metrics, :class:`EventHub` keeps the sink at None, so the hot path builds no
event at all. Once someone listens, the hub looks the task up at the edge (name, queue, worker)
and hands one :class:`BrokerEvent` to each listener.

A subscriber (one Events call) has a bounded buffer: a reader that stops reading loses events,
counted, and never slows the broker. Everything here runs on the broker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broker.core.broker import Broker
from broker.core.events import EventKind, TaskEvent
from broker.core.model import TaskState
from broker.core.sessions import Session
from broker.errors import InvalidArgument

logger = logging.getLogger(__name__)

WORKER_ONLINE = "worker_online"
WORKER_OFFLINE = "worker_offline"
WORKER_HEARTBEAT = "worker_heartbeat"
WORKER_KINDS = (WORKER_ONLINE, WORKER_OFFLINE, WORKER_HEARTBEAT)

# A finished task's event is named by its outcome, as Celery's task-succeeded / task-failed.
_OUTCOMES = {
    TaskState.SUCCESS: "succeeded",
    TaskState.FAILURE: "failed",
    TaskState.REVOKED: "revoked",
}
TASK_KINDS = (
    *(kind.value for kind in EventKind if kind is not EventKind.FINISHED),
    "succeeded",
    "failed",
)
EVENT_KINDS = frozenset((*TASK_KINDS, *WORKER_KINDS))
# Transitions that end a running attempt, so its start time is no longer needed.
_ATTEMPT_ENDS = frozenset(
    (
        EventKind.FINISHED,
        EventKind.RETRIED,
        EventKind.REQUEUED,
        EventKind.REVOKED,
        EventKind.EXPIRED,
    )
)


@dataclass(frozen=True, slots=True)
class BrokerEvent:
    """One event as listeners see it (task fields empty for worker events and vice versa)."""

    kind: str
    at: float
    task_id: str = ""
    task_name: str = ""
    queue: str = ""
    worker_id: str = ""
    detail: str = ""
    # Worker events: leases held and concurrency.
    active: int = 0
    concurrency: int = 0
    # succeeded / failed: seconds from started to the outcome (0 when the start was not seen).
    runtime: float = 0.0
    # Worker events: the queues the worker consumes (for the queue filter).
    queues: tuple[str, ...] = ()


Listener = Callable[[BrokerEvent], None]


class Subscriber:
    """One Events call: its filters, its bounded buffer and what it missed."""

    def __init__(
        self,
        queues: Iterable[str],
        task_names: Iterable[str],
        kinds: Iterable[str],
        capacity: int,
    ) -> None:
        self.queues = frozenset(queues)
        self.task_names = frozenset(task_names)
        self.kinds = frozenset(kinds)
        unknown = sorted(self.kinds - EVENT_KINDS)
        if unknown:
            raise InvalidArgument(
                f"unknown event kind {', '.join(unknown)} (known: {', '.join(sorted(EVENT_KINDS))})"
            )
        self.buffer: asyncio.Queue[BrokerEvent] = asyncio.Queue(capacity)
        self.dropped = 0

    def wants(self, event: BrokerEvent) -> bool:
        """True when ``event`` passes this subscriber's filters."""
        if self.kinds and event.kind not in self.kinds:
            return False
        if event.kind not in WORKER_KINDS:
            if self.queues and event.queue not in self.queues:
                return False
            return not self.task_names or event.task_name in self.task_names
        # A worker event: it matches a queue filter through the queues the worker consumes,
        # and carries no task name, so a task-name filter leaves it out.
        if self.queues and self.queues.isdisjoint(event.queues):
            return False
        return not self.task_names

    def offer(self, event: BrokerEvent) -> None:
        """Buffer ``event`` if wanted; count it as dropped when the buffer is full."""
        if not self.wants(event):
            return
        try:
            self.buffer.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def next(self) -> tuple[BrokerEvent, int]:
        """The next event and how many were dropped before it (the count then restarts)."""
        event = await self.buffer.get()
        dropped, self.dropped = self.dropped, 0
        return event, dropped


class EventHub:
    """Turns core events into :class:`BrokerEvent` s for subscribers and listeners.

    Args:
        broker: The core; the hub sets its lifecycle's sink only while someone listens.
        heartbeat_interval: Seconds between worker heartbeats while a subscriber is attached.
    """

    def __init__(self, broker: Broker, heartbeat_interval: float) -> None:
        self._broker = broker
        self._heartbeat_interval = heartbeat_interval
        self._subscribers: set[Subscriber] = set()
        self._listeners: list[Listener] = []
        # When each running task started (as seen while listening), for runtimes.
        self._started: dict[str, float] = {}
        self._heartbeats: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        """True while anyone listens (the core's sink is set)."""
        return bool(self._subscribers or self._listeners)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event from now on (metrics); there is no removal."""
        self._listeners.append(listener)
        self._install()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Start feeding ``subscriber``; call on the loop."""
        self._subscribers.add(subscriber)
        self._install()
        if self._heartbeats is None:
            self._heartbeats = asyncio.get_running_loop().create_task(self._beat())

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop feeding ``subscriber``; the last one out turns the sink off."""
        self._subscribers.discard(subscriber)
        if not self._subscribers and self._heartbeats is not None:
            self._heartbeats.cancel()
            self._heartbeats = None
        self._install()

    def on_task_event(self, event: TaskEvent) -> None:
        """The core's sink: describe ``event`` and publish it."""
        record = self._broker.lifecycle.tasks.get(event.task_id)
        kind = event.kind
        name = kind.value
        runtime = 0.0
        if kind is EventKind.STARTED:
            self._started.setdefault(event.task_id, event.at)
        elif kind in _ATTEMPT_ENDS:
            started = self._started.pop(event.task_id, None)
            if record is not None and kind is EventKind.FINISHED:
                name = _OUTCOMES.get(record.state, name)
                runtime = event.at - started if started is not None else 0.0
        if record is None:
            self._publish(BrokerEvent(name, event.at, event.task_id, detail=event.detail))
            return
        self._publish(
            BrokerEvent(
                name,
                event.at,
                event.task_id,
                record.spec.name,
                record.spec.queue,
                record.worker_id,
                event.detail,
                runtime=runtime,
            )
        )

    def worker_event(self, kind: str, session: Session, detail: str = "") -> None:
        """Publish a worker event about ``session`` (a no-op while nobody listens)."""
        if not (self._subscribers or self._listeners):
            return
        self._publish(
            BrokerEvent(
                kind,
                self._broker.clock.time(),
                worker_id=session.worker_id,
                detail=detail,
                active=len(session.leases),
                concurrency=session.hello.concurrency,
                queues=session.queues,
            )
        )

    def _publish(self, event: BrokerEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("an event listener failed")
        for subscriber in self._subscribers:
            subscriber.offer(event)

    def _install(self) -> None:
        lifecycle = self._broker.lifecycle
        if self.active:
            lifecycle.sink = self.on_task_event
        else:
            lifecycle.sink = None
            self._started.clear()

    async def _beat(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self._heartbeat_interval)
                for session in self._broker.open_sessions():
                    self.worker_event(WORKER_HEARTBEAT, session)
