"""Round-trip latency: sequential `add.delay(1, 2).get()` calls, percentiles in milliseconds."""

from __future__ import annotations

import statistics
import time

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.stats import percentile
from bench.systems.base import Deployment, System

POOLS = ("process", "solo")


def round_trips(system: System, count: int, warmup: int) -> dict[str, float]:
    """Time count sequential round trips after warmup untimed ones; percentiles in ms."""
    for _ in range(warmup):
        system.round_trip()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        system.round_trip()
        samples.append(1000 * (time.perf_counter() - started))
    return {
        "p50 ms": percentile(samples, 0.50),
        "p99 ms": percentile(samples, 0.99),
        "p99.9 ms": percentile(samples, 0.999),
        "mean ms": statistics.fmean(samples),
    }


class Latency:
    name = "latency"
    description = "add.delay(1, 2).get() round trips, one at a time"

    def variants(self, config: BenchConfig) -> list[Variant]:
        return [Variant(f"pool={pool}", Deployment(pool=pool)) for pool in POOLS]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        pass

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        return round_trips(system, config.round_trips, config.warmup_round_trips)
