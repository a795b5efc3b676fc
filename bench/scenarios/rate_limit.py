"""Rate-limit accuracy: the rate two workers together achieve against a task's rate limit.

``bench.stamped`` is declared with ``rate_limit=f"{STAMPED_RATE}/s"`` on both systems. Celeriac's
broker holds the limit across all workers, so two workers together should achieve the limit;
Celery's limit is per worker, so two workers reach about twice it. Each task returns the wall
time it started; the achieved rate is (n - 1) / (last start - first start), and the busiest
one-second window says whether it ever burst.
"""

from __future__ import annotations

from bench.config import BenchConfig
from bench.limits import STAMPED_RATE
from bench.scenarios.base import Variant
from bench.systems.base import Deployment, System, collect

WORKERS = 2


def rate_figures(starts: list[float], limit: float) -> dict[str, float]:
    """Achieved rate, its ratio to the limit, and the busiest one-second window."""
    starts = sorted(starts)
    span = starts[-1] - starts[0]
    achieved = (len(starts) - 1) / span if span > 0 else float("inf")
    busiest, first = 0, 0
    for last, start in enumerate(starts):
        while start - starts[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return {
        "limit tasks/s": limit,
        "achieved tasks/s": achieved,
        "achieved / limit %": 100 * achieved / limit,
        "busiest 1 s window tasks": float(busiest),
    }


class RateLimit:
    name = "rate_limit"
    description = f"achieved rate vs a {STAMPED_RATE}/s task rate limit across {WORKERS} workers"

    def variants(self, config: BenchConfig) -> list[Variant]:
        deployment = Deployment(pool="thread", concurrency=4, workers=WORKERS)
        return [Variant(f"limit={STAMPED_RATE}/s, workers={WORKERS}", deployment)]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        """Nothing to set up: the limit comes with the task's declaration."""

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        pending = system.submit_stamped(config.rate_limit_tasks)
        collected = collect("rate-limited tasks", pending, config.run_time_limit)
        starts = [float(started) for started in collected]
        return rate_figures(starts, STAMPED_RATE)
