"""Sizes of every scenario, in one place: the full run and the quick smoke-test run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    """How much work each scenario does, and how often it repeats.

    Attributes:
        runs: repetitions of every measurement; figures are the median with min-max spread.
        throughput_tasks: no-op tasks per end-to-end throughput run (the issue's N).
        drain_tasks: no-op tasks queued for each drain run; None means throughput_tasks. The
            quick run keeps it large enough that the metered window (the middle 80%) spans many
            of the kernel's 10 ms CPU-accounting ticks: a window of a tick or two can read 0%.
        throughput_warmup_tasks: no-op tasks run through each freshly started system before its
            first throughput run, unmeasured, on both systems alike (pool children warm, first
            connections made, code paths taken once), so every measured run is a steady one.
        enqueue_one_by_one: `delay()` calls per one-by-one enqueue run.
        enqueue_batch: tasks per batch-submit run.
        round_trips: sequential `add.delay(1, 2).get()` calls per latency run.
        warmup_round_trips: round trips before timing starts (connections, imports, caches).
        memory_depths: queued no-op tasks whose broker RSS growth is measured.
        memory_runs: runs of each memory variant (each fills a fresh broker; RSS growth varies
            little from run to run). Fills deeper than celery_fill_limit run once: a million-task
            fill is the slowest step of the harness and its figure moved <0.1% between runs.
        memory_results: finished tasks whose stored results' RSS growth is measured.
        celery_fill_limit: deepest queue filled on Celery; its one-publish-per-task path
            (~1,000-1,400 tasks/s measured here) would take a quarter of an hour for a million.
        scaling_workers: connected worker counts (lightweight in-protocol workers).
        scaling_depths: tasks queued in an unconsumed queue while scaling is measured.
        scaling_tasks: tasks per throughput measurement in the scaling scenario.
        scaling_round_trips: round trips per latency measurement in the scaling scenario.
        idle_window_s: how long the broker's CPU is watched with idle workers connected.
        rate_limit_tasks: rate-limited tasks per rate-limit run (at bench.limits.STAMPED_RATE).
        chord_members: members of the workflows scenario's chord (the issue's 10,000).
        chain_links: links of the workflows scenario's chain (the issue's 1,000).
        run_time_limit: seconds one workflow or rate-limit run may take; past it the row reads
            "did not finish in N s" and that system's processes are stopped (Celery+Redis's
            chord of 10,000 may not finish at all, and a hung run must not stall the others).
    """

    runs: int = 3
    throughput_tasks: int = 20_000
    drain_tasks: int | None = None
    throughput_warmup_tasks: int = 2_000
    enqueue_one_by_one: int = 3_000
    enqueue_batch: int = 20_000
    round_trips: int = 1_000
    warmup_round_trips: int = 50
    memory_depths: tuple[int, ...] = (100_000, 1_000_000)
    memory_runs: int = 2
    memory_results: int = 10_000
    celery_fill_limit: int = 100_000
    scaling_workers: tuple[int, ...] = (1, 10, 100)
    scaling_depths: tuple[int, ...] = (1_000, 1_000_000)
    scaling_tasks: int = 5_000
    scaling_round_trips: int = 300
    idle_window_s: float = 3.0
    rate_limit_tasks: int = 500
    chord_members: int = 10_000
    chain_links: int = 1_000
    run_time_limit: float = 300.0

    @classmethod
    def quick(cls) -> BenchConfig:
        """A small version of every scenario, one run each: a smoke test, not a measurement."""
        return cls(
            runs=1,
            throughput_tasks=2_000,
            drain_tasks=10_000,
            throughput_warmup_tasks=200,
            enqueue_one_by_one=300,
            enqueue_batch=2_000,
            round_trips=100,
            warmup_round_trips=5,
            memory_depths=(10_000,),
            memory_runs=1,
            memory_results=1_000,
            scaling_workers=(1, 10),
            scaling_depths=(1_000, 10_000),
            scaling_tasks=1_000,
            scaling_round_trips=50,
            idle_window_s=1.0,
            rate_limit_tasks=40,
            chord_members=50,
            chain_links=20,
            run_time_limit=60.0,
        )
