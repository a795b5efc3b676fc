"""Enqueue rate from one client thread, with no worker running: one-by-one and batch submit."""

from __future__ import annotations

import time

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.systems.base import Deployment, System


class Enqueue:
    name = "enqueue"
    description = "tasks/s accepted by the broker from one thread: delay(), fire-and-forget, group"

    def variants(self, config: BenchConfig) -> list[Variant]:
        return [Variant("no workers", Deployment(workers=0))]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        pass

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        started = time.perf_counter()
        for _ in range(config.enqueue_one_by_one):
            system.submit_one()
        one_by_one = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(config.enqueue_one_by_one):
            system.submit_one(ignore_result=True)
        fire_and_forget = time.perf_counter() - started
        started = time.perf_counter()
        system.submit_batch(config.enqueue_batch)
        batch = time.perf_counter() - started
        system.purge()
        return {
            "delay() tasks/s": config.enqueue_one_by_one / one_by_one,
            "delay() us/task": 1e6 * one_by_one / config.enqueue_one_by_one,
            # Celery subscribes to each task's result when it sends it; without a result to
            # wait for, neither side does that work.
            "ignore_result tasks/s": config.enqueue_one_by_one / fire_and_forget,
            "batch tasks/s": config.enqueue_batch / batch,
        }
