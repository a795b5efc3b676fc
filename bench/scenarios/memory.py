"""Broker memory: RSS growth per queued no-op task and per stored result, on a fresh broker.

For Celery the "broker" is the Redis server, which holds both the queue and the results.
"""

from __future__ import annotations

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.systems.base import COLLECT_TIMEOUT, Deployment, System, Unsupported

# Submit big fills in slices, so the client never holds a million signatures at once.
FILL_SLICE = 10_000
MIB = 1024 * 1024


def fill(system: System, count: int, queue: str | None, ignore_result: bool = False) -> None:
    """Queue count no-ops through the batch path, in slices."""
    done = 0
    while done < count:
        size = min(FILL_SLICE, count - done)
        system.submit_batch(size, queue=queue, ignore_result=ignore_result)
        done += size


def check_fill(system: System, count: int, config: BenchConfig) -> None:
    """Refuse fills that would take minutes on the Celery side (one publish per task).

    Raises:
        Unsupported: count is over config.celery_fill_limit on Celery.
    """
    if system.name == "celery" and count > config.celery_fill_limit:
        raise Unsupported(f"filling {count:,} tasks at ~1,000-1,400/s would take minutes")


class Memory:
    name = "memory"
    description = "broker RSS growth per queued task (no workers) and per stored result"

    def variants(self, config: BenchConfig) -> list[Variant]:
        runs = min(config.runs, config.memory_runs)
        queued = [
            Variant(
                f"queued={depth:,}",
                Deployment(workers=0),
                fresh_each_run=True,
                size=depth,
                runs=runs if depth <= config.celery_fill_limit else 1,
            )
            for depth in config.memory_depths
        ]
        results = Variant(f"results={config.memory_results:,}", Deployment(), True, 0, runs)
        return [*queued, results]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        check_fill(system, variant.size, config)

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        before = system.broker_rss()
        if variant.size:
            count = variant.size
            fill(system, count, queue=None)
        else:
            count = config.memory_results
            for done in range(0, count, FILL_SLICE):
                system.submit_batch(min(FILL_SLICE, count - done)).get(timeout=COLLECT_TIMEOUT)
        after = system.broker_rss()
        return {"bytes/task": (after - before) / count, "broker RSS MiB": after / MIB}
