"""End-to-end throughput: N no-op tasks submitted as one group and every result collected."""

from __future__ import annotations

import time

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.systems.base import COLLECT_TIMEOUT, Deployment, System

POOLS = ("process", "thread", "async")


def run_batch(system: System, count: int) -> dict[str, float]:
    """Submit count no-ops through the batch path, wait for all results; rate and completions."""
    started = time.perf_counter()
    results = system.submit_batch(count).get(timeout=COLLECT_TIMEOUT)
    elapsed = time.perf_counter() - started
    return {"tasks/s": count / elapsed, "completed": float(len(results))}


class Throughput:
    name = "throughput"
    description = "end-to-end no-op tasks/s (group submit + collect), one worker per pool"

    def variants(self, config: BenchConfig) -> list[Variant]:
        return [Variant(f"pool={pool}", Deployment(pool=pool)) for pool in POOLS]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        if config.throughput_warmup_tasks:
            run_batch(system, config.throughput_warmup_tasks)

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        return run_batch(system, config.throughput_tasks)
