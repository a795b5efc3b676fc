"""A paired A/B between two checkouts (or two broker flag sets): both systems up at once.

`python -m bench.paired DIR_A DIR_B [--what trip|delay|batch|e2e] [--blocks N] [--trips N]`

On a shared 2-core VM the machine's speed drifts by 20-30% within minutes, so two runs made one
after the other differ by more than most changes are worth. Here a broker (and, where the figure
needs one, a worker) from each checkout run side by side (``git worktree add /tmp/a REV`` makes
one), and one client alternates blocks between them, A B, B A, ... Both blocks of a pair saw the
same machine, so the figure is taken per pair: the median over pairs of B's block against A's.

What a block is (``--what``):

- ``trip`` (default): ``--trips`` sequential ``add.delay(1, 2).get()`` through a process-pool
  worker; the block's median round trip. Also reported as the B - A difference in µs.
- ``delay``: ``--trips`` sequential ``noop.delay()`` with no worker (the enqueue scenario's
  one-by-one figure); the block's mean time per call.
- ``batch``: one ``group`` of ``--tasks`` no-ops submitted with no worker (the enqueue
  scenario's batch figure); the block's time.
- ``e2e``: one ``group`` of ``--tasks`` no-ops through a process-pool worker until every result
  is back (the throughput scenario); the block's time.

``--flags-a`` / ``--flags-b`` add ``serve`` flags to one side (``--flags-a=--memory-only``
compares the default journal with memory-only in one checkout). The ratio is B's time over A's:
below 1 means B is faster.

What it can and cannot tell:
- Only the broker and the worker come from the two checkouts; the client is this process's.
- The two systems are not quite equal even with identical code (which CPU each process sleeps
  on, for one): identical checkouts have differed by up to ±60 µs per round trip, and the
  system started second came out faster in 5 of 6 runs of one comparison. Run both orders
  (A B, then B A) a few times and take the median of the sign-corrected figures.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench.processes import ManagedProcess, cpu_seconds
from bench.stats import percentile
from bench.systems.celeriac_system import ADMIN_TIMEOUT, LISTENING, ROUND_TRIP_TIMEOUT
from celeriac.v1 import admin_pb2, admin_pb2_grpc

WARMUP = 300
WHAT = ("trip", "delay", "batch", "e2e")
_NEEDS_WORKER = {"trip", "e2e"}


class _System:
    """A broker (and a process-pool worker when ``worker``) started from one checkout."""

    def __init__(self, root: Path, flags: list[str], worker: bool) -> None:
        self.processes: list[ManagedProcess] = []
        # A fresh journal per start; through the environment, which a checkout from before
        # the journal ignores.
        self.data_dir = tempfile.mkdtemp(prefix="celeriac-paired-")
        broker = self._start(
            root,
            "broker",
            ["-m", "broker", "serve", "--port", "0", *flags],
            {"CELERIAC_BROKER_DATA_DIR": self.data_dir},
        )
        self.address = broker.wait_for_line(LISTENING).group(1)
        self.broker_pid = broker.pid
        if worker:
            started = self._start(
                root,
                "worker",
                ["-m", "worker", "--tasks", "bench.tasks_celeriac", "--broker", self.address],
            )
            started.wait_for_line(r"worker ready")

    def _start(
        self, root: Path, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess.python(f"{name}-{root.name}", args, env, root=root)
        self.processes.append(process)
        return process

    def purge(self) -> None:
        """Empty the default queue (the no-worker blocks leave their tasks queued)."""
        with grpc.insecure_channel(self.address) as channel:
            admin_pb2_grpc.AdminServiceStub(channel).PurgeQueue(
                admin_pb2.PurgeQueueRequest(queue="default"), timeout=ADMIN_TIMEOUT
            )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _timed(action: Callable[[], Any], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def _block_of(what: str, bench: Any, trips: int, tasks: int) -> Callable[[], list[float]]:
    """The measured block of ``what`` on one system: returns the samples it took."""
    from client import group

    if what == "trip":
        return lambda: _timed(lambda: bench.add.delay(1, 2).get(timeout=ROUND_TRIP_TIMEOUT), trips)
    if what == "delay":
        return lambda: _timed(bench.noop.delay, trips)
    if what == "batch":
        return lambda: _timed(lambda: group(bench.noop.s() for _ in range(tasks)).apply_async(), 1)
    return lambda: _timed(
        lambda: (
            group(bench.noop.s() for _ in range(tasks))
            .apply_async()
            .get(timeout=ROUND_TRIP_TIMEOUT)
        ),
        1,
    )


def _figure(what: str, samples: list[float]) -> float:
    """One block's figure in seconds: the median round trip, else the mean per call."""
    return statistics.median(samples) if what == "trip" else statistics.fmean(samples)


def compare(
    root_a: Path,
    root_b: Path,
    blocks: int,
    trips: int,
    what: str = "trip",
    tasks: int = 5_000,
    flags: tuple[list[str], list[str]] = ([], []),
) -> str:
    """Run the paired comparison; returns a one-line summary."""
    from bench.tasks_celeriac import make_app

    systems: list[_System] = []
    try:
        for root, side_flags in zip((root_a, root_b), flags, strict=True):
            systems.append(_System(root, side_flags, what in _NEEDS_WORKER))
        apps = [make_app(system.address) for system in systems]
        runs = [_block_of(what, app, trips, tasks) for app in apps]
        for run, system in zip(runs, systems, strict=True):
            run()  # warm-up
            if what in ("delay", "batch"):
                system.purge()
        samples: list[list[float]] = [[], []]
        broker_cpu = [0.0, 0.0]
        ratios, differences = [], []
        for index in range(blocks):
            figures = {}
            for side in (0, 1) if index % 2 == 0 else (1, 0):
                cpu_before = cpu_seconds([systems[side].broker_pid])
                block = runs[side]()
                broker_cpu[side] += cpu_seconds([systems[side].broker_pid]) - cpu_before
                if what in ("delay", "batch"):
                    systems[side].purge()
                samples[side] += block
                figures[side] = _figure(what, block)
            ratios.append(figures[1] / figures[0])
            differences.append(figures[1] - figures[0])
        for app in apps:
            app.app.close()
    finally:
        for system in systems:
            system.stop()
    per_sample = 1 if what in ("trip", "delay") else tasks
    a_cpu, b_cpu = (
        1e6 * cpu / (per_sample * len(s)) for cpu, s in zip(broker_cpu, samples, strict=True)
    )
    ratio = (
        f"B/A time per block pair: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}) | broker CPU per task: "
        f"A {a_cpu:.0f} us, B {b_cpu:.0f} us, B/A {b_cpu / a_cpu if a_cpu else float('nan'):.3f}"
    )
    if what == "trip":
        a, b = ([1000 * percentile(s, q) for q in (0.5, 0.99)] for s in samples)
        return (
            f"A p50 {a[0]:.3f} p99 {a[1]:.3f} | B p50 {b[0]:.3f} p99 {b[1]:.3f} | "
            f"block-median difference B-A: median {1e6 * statistics.median(differences):+.0f} "
            f"us, mean {1e6 * statistics.fmean(differences):+.0f} us | {ratio}"
        )
    a_rate, b_rate = (per_sample / statistics.fmean(s) for s in samples)
    return f"{what}: A {a_rate:,.0f} tasks/s, B {b_rate:,.0f} tasks/s (medians) | {ratio}"


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and print the comparison."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.paired",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root_a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("root_b", type=Path, help="checkout B (the change)")
    parser.add_argument("--what", choices=WHAT, default="trip", help="what a block measures")
    parser.add_argument("--blocks", type=int, default=16, help="block pairs (default 16)")
    parser.add_argument("--trips", type=int, default=100, help="calls per trip/delay block")
    parser.add_argument("--tasks", type=int, default=5_000, help="tasks per batch/e2e block")
    parser.add_argument("--flags-a", default="", help="extra `serve` flags for A")
    parser.add_argument("--flags-b", default="", help="extra `serve` flags for B")
    args = parser.parse_args(argv)
    for root in (args.root_a, args.root_b):
        if not (root / "broker" / "__main__.py").exists():
            parser.error(f"{root} is not a checkout of this project")
    flags = (shlex.split(args.flags_a), shlex.split(args.flags_b))
    print(
        compare(
            args.root_a.resolve(),
            args.root_b.resolve(),
            args.blocks,
            args.trips,
            args.what,
            args.tasks,
            flags,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
