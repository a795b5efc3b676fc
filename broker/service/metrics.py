"""Prometheus metrics, served at /metrics on the broker's HTTP port (:mod:`broker.service.web`).

Counters and the runtime histogram follow the events stream (:mod:`broker.service.events`) on
the broker's loop. Gauges (depths, workers, slots, leases, refusals) are read at scrape time:
prometheus_client serves scrapes from its own thread, and the core belongs to the event loop,
so the scrape hands one coroutine to the loop and waits for its snapshot. Process memory and CPU
come from prometheus_client's process collector.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from broker.service.events import BrokerEvent
from broker.service.loop_calls import LoopUnavailable, call_on_loop
from broker.service.runtime import Runtime

logger = logging.getLogger(__name__)

# Outcomes counted per task name.
OUTCOMES = frozenset(("succeeded", "failed", "retried", "revoked", "expired", "dead_lettered"))
# Task names are chosen by producers: past this many distinct ones, the rest share the label
# "other", so a client making names up cannot grow every scrape without end.
MAX_TASK_NAMES = 1_000
OTHER_NAMES = "other"


@dataclass
class Snapshot:
    """What the gauges show, read on the loop in one go."""

    queues: list[tuple[str, int, int, int, int]] = field(default_factory=list)
    workers: int = 0
    slots: int = 0
    slots_in_use: int = 0
    leases: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class BrokerCollector(Collector):
    """Reads the core's gauges through the loop at scrape time."""

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self._runtime = runtime
        self._loop = loop

    def _snapshot(self) -> Snapshot:
        core = self._runtime.broker
        sessions = core.open_sessions()
        return Snapshot(
            queues=[
                (q.name, q.ready, q.scheduled, q.leased, q.consumers) for q in core.queue_stats()
            ],
            workers=len(sessions),
            slots=sum(session.hello.concurrency for session in sessions),
            slots_in_use=sum(len(session.leases) for session in sessions),
            leases=len(core.lifecycle.leases),
            refused=dict(self._runtime.refusals.counts),
        )

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Yield the gauges; runs in prometheus_client's HTTP thread."""
        try:
            snap = call_on_loop(self._loop, self._snapshot)
        except LoopUnavailable:
            logger.warning("metrics scrape: the broker loop did not answer; gauges left out")
            return
        depth = GaugeMetricFamily(
            "celeriac_queue_tasks", "Tasks per queue and state", labels=["queue", "state"]
        )
        consumers = GaugeMetricFamily(
            "celeriac_queue_consumers", "Connected workers consuming the queue", labels=["queue"]
        )
        for name, ready, scheduled, leased, consumed in snap.queues:
            depth.add_metric([name, "ready"], ready)
            depth.add_metric([name, "scheduled"], scheduled)
            depth.add_metric([name, "leased"], leased)
            consumers.add_metric([name], consumed)
        yield depth
        yield consumers
        yield GaugeMetricFamily("celeriac_workers", "Connected workers", value=snap.workers)
        slots = GaugeMetricFamily(
            "celeriac_worker_slots", "Worker slots (sum of concurrency)", labels=["state"]
        )
        slots.add_metric(["total"], snap.slots)
        slots.add_metric(["in_use"], snap.slots_in_use)
        yield slots
        yield GaugeMetricFamily("celeriac_leases", "Leases held by workers", value=snap.leases)
        refused = CounterMetricFamily(
            "celeriac_refused_requests", "Requests refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(snap.refused.items()):
            refused.add_metric([reason], count)
        yield refused


class TaskMetrics:
    """Counters and runtime histogram fed by the events stream on the loop."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._outcomes = Counter(
            "celeriac_tasks",
            "Task outcomes by task name",
            ["name", "outcome"],
            registry=registry,
        )
        self._accepted = Counter(
            "celeriac_tasks_accepted", "Tasks accepted by task name", ["name"], registry=registry
        )
        self._runtime = Histogram(
            "celeriac_task_runtime_seconds",
            "Seconds from started to succeeded or failed, by task name",
            ["name"],
            registry=registry,
        )
        self._names: set[str] = set()

    def on_event(self, event: BrokerEvent) -> None:
        """Count ``event`` (an events-stream listener)."""
        kind = event.kind
        if kind == "accepted":
            self._accepted.labels(self._label(event.task_name)).inc()
        elif kind in OUTCOMES:
            name = self._label(event.task_name)
            self._outcomes.labels(name, kind).inc()
            if event.runtime > 0:
                self._runtime.labels(name).observe(event.runtime)

    def _label(self, name: str) -> str:
        if name in self._names:
            return name
        if len(self._names) < MAX_TASK_NAMES:
            self._names.add(name)
            return name
        return OTHER_NAMES


def metrics_registry(runtime: Runtime) -> CollectorRegistry:
    """A registry of ``runtime``'s metrics; counting starts now (call on the loop)."""
    registry = CollectorRegistry()
    registry.register(BrokerCollector(runtime, asyncio.get_running_loop()))
    ProcessCollector(registry=registry)
    runtime.events.add_listener(TaskMetrics(registry).on_event)
    return registry
