"""Scaling: throughput and latency as connected workers and queued backlog grow.

Workers: 1, 10 and 100 lightweight in-protocol workers (`bench.fake_workers`, Celeriac only),
busy (throughput, latency) and idle (the broker's CPU while they sit connected with nothing to do,
measured in its own variant so the idle window does not dilute the busy CPU figures).
Depth: a backlog in a queue nobody consumes, while a real worker serves the default queue;
enqueue into the deep queue (fire and forget) and the default queue's throughput and latency
must not move as the backlog grows.
"""

from __future__ import annotations

import time

from bench.config import BenchConfig
from bench.processes import cpu_seconds, descendants
from bench.scenarios.base import Variant
from bench.scenarios.latency import round_trips
from bench.scenarios.memory import check_fill, fill
from bench.scenarios.throughput import run_batch
from bench.systems.base import Deployment, System

BACKLOG_QUEUE = "backlog"
# Concurrency of each lightweight worker: credits it grants.
FAKE_SLOTS = 2


def idle_broker_cpu(system: System, window: float) -> float:
    """Percent of one core the broker uses over window seconds with nothing to do."""
    pids = [pid for root in system.roles()["broker"] for pid in descendants(root)]
    before = cpu_seconds(pids)
    started = time.perf_counter()
    # A measurement window, not synchronisation: the broker is left alone for this long.
    time.sleep(window)
    return 100 * (cpu_seconds(pids) - before) / (time.perf_counter() - started)


class Scaling:
    name = "scaling"
    description = "throughput/latency with 1-100 connected workers and with a deep backlog"

    def variants(self, config: BenchConfig) -> list[Variant]:
        variants = []
        for prefix in ("idle workers", "workers"):
            variants += [
                Variant(
                    f"{prefix}={count}",
                    Deployment(workers=0, fake_workers=count, concurrency=FAKE_SLOTS),
                    size=count,
                )
                for count in config.scaling_workers
            ]
        by_depth = [Variant(f"depth={depth:,}", size=depth) for depth in config.scaling_depths]
        return [*variants, *by_depth]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        if variant.label.startswith("depth="):
            check_fill(system, variant.size, config)
            # Fire and forget: a Celery client that sends a task subscribes to its result, and
            # unread subscription replies from the fill would be parsed in the timed runs.
            fill(system, variant.size, queue=BACKLOG_QUEUE, ignore_result=True)
            if config.throughput_warmup_tasks:
                run_batch(system, config.throughput_warmup_tasks)

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        figures: dict[str, float] = {}
        if variant.label.startswith("idle workers="):
            return {"idle broker cpu %": idle_broker_cpu(system, config.idle_window_s)}
        if variant.label.startswith("depth="):
            started = time.perf_counter()
            system.submit_batch(config.scaling_tasks, queue=BACKLOG_QUEUE, ignore_result=True)
            figures["deep enqueue tasks/s"] = config.scaling_tasks / (time.perf_counter() - started)
        figures.update(run_batch(system, config.scaling_tasks))
        latency = round_trips(system, config.scaling_round_trips, config.warmup_round_trips)
        figures["p50 ms"] = latency["p50 ms"]
        figures["p99 ms"] = latency["p99 ms"]
        return figures
