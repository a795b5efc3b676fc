"""Throughput: no-op tasks/s, end to end and draining a backlog.

End to end (`pool=...`): N tasks submitted as one group from one client thread and every result
collected, on the same cores as the broker and the worker. This is what a service sees, and it
includes the client's own submit and collect work (Celery's group publishes one message per
task; Celeriac's goes in batches).

Drain (`pool=process, drain...`): the broker and a worker alone. N tasks are queued with no worker
running; then a worker starts and the rate is read off the queue's depth, polled, between the
first tenth of the backlog taken and the ninth, so the worker's start and the tail are left
out. The client does nothing but poll meanwhile. Results are stored as usual; nobody waits.
Each system drains with its default prefetch, then with the same prefetch on both sides.
"""

from __future__ import annotations

import time

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.scenarios.memory import fill
from bench.stats import CpuMeter
from bench.systems.base import COLLECT_TIMEOUT, Deployment, System

POOLS = ("process", "thread", "async")
DRAIN = "pool=process, drain"
# Drains with the same prefetch on both sides: Celery's default hold (4 per slot on 2 cores),
# and what Celery's optimizing guide suggests for many short tasks (a multiplier of 64).
EQUAL_PREFETCH = (8, 128)
# How often the drain polls the queue's depth: 1% of a 16,000-task window at 20,000 tasks/s.
DEPTH_POLL_S = 0.005


def run_batch(system: System, count: int) -> dict[str, float]:
    """Submit count no-ops through the batch path, wait for all results; rate and completions."""
    started = time.perf_counter()
    results = system.submit_batch(count).get(timeout=COLLECT_TIMEOUT)
    elapsed = time.perf_counter() - started
    return {"tasks/s": count / elapsed, "completed": float(len(results))}


def wait_until_ready_count(system: System, at_most: int) -> float:
    """Poll until at most ``at_most`` tasks wait in the default queue; when it was seen."""
    deadline = time.perf_counter() + COLLECT_TIMEOUT
    while system.ready_count() > at_most:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the queue never drained to {at_most} tasks")
        # Polling a depth is the measurement itself; nothing announces it.
        time.sleep(DEPTH_POLL_S)
    return time.perf_counter()


def run_drain(system: System, count: int, prefetch: int | None) -> dict[str, float]:
    """Queue count no-ops, start the default worker, time the middle 80% of the drain."""
    system.purge()
    fill(system, count, queue=None)
    system.start_workers(Deployment(prefetch=prefetch))
    try:
        first, last = count - count // 10, count // 10
        started = wait_until_ready_count(system, first)
        meter = CpuMeter(system.roles())
        meter.start()
        ended = wait_until_ready_count(system, last)
        # A worker whose prefetch swallows a small backlog at once drains it between two polls.
        elapsed = max(ended - started, DEPTH_POLL_S)
        figures = {"tasks/s": (first - last) / elapsed, **meter.stop()}
        wait_until_ready_count(system, 0)
    finally:
        system.stop_workers()
    return figures


class Throughput:
    name = "throughput"
    description = "no-op tasks/s: end to end from one client (group submit + collect), and drain"

    def variants(self, config: BenchConfig) -> list[Variant]:
        end_to_end = [Variant(f"pool={pool}", Deployment(pool=pool)) for pool in POOLS]
        # The broker alone at first: each run starts its worker once the backlog is queued.
        drains = [Variant(DRAIN, Deployment(workers=0))] + [
            Variant(f"{DRAIN}, prefetch={count}", Deployment(workers=0, prefetch=count))
            for count in EQUAL_PREFETCH
        ]
        return [*end_to_end, *drains]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        if not _is_drain(variant) and config.throughput_warmup_tasks:
            run_batch(system, config.throughput_warmup_tasks)

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        if _is_drain(variant):
            count = config.drain_tasks or config.throughput_tasks
            return run_drain(system, count, variant.deployment.prefetch)
        return run_batch(system, config.throughput_tasks)


def _is_drain(variant: Variant) -> bool:
    return variant.label.startswith(DRAIN)
