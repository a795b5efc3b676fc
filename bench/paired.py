"""A paired A/B of the round trip between two checkouts: both systems up at once, one client.

`python -m bench.paired DIR_A DIR_B [--blocks N] [--trips N]`

On a shared 2-core VM the machine's speed drifts by 20-30% within minutes, so two round-trip
runs made one after the other differ by more than most changes are worth. Here a broker and a
worker from each checkout run side by side (``git worktree add /tmp/a REV`` makes one), and one
client alternates blocks of sequential ``add.delay(1, 2).get()`` between them, A B, B A, ... The
figure is the median over block pairs of (median of B's block - median of A's block): both
blocks of a pair saw the same machine.

What it can and cannot tell:
- Only the broker and the worker come from the two checkouts; the client is this process's.
- The two systems are not quite equal even with identical code (which CPU each process sleeps
  on, for one): identical checkouts have differed by up to ±60 µs, and the system started
  second came out faster in 5 of 6 runs of one comparison. Run both orders (A B, then B A) a
  few times and take the median of the sign-corrected differences.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.processes import ManagedProcess
from bench.stats import percentile
from bench.systems.celeriac_system import LISTENING, ROUND_TRIP_TIMEOUT

WARMUP = 300


class _System:
    """A broker and a process-pool worker started from one checkout."""

    def __init__(self, root: Path) -> None:
        self.processes: list[ManagedProcess] = []
        # A fresh journal per start; through the environment, which a checkout from before
        # the journal ignores.
        self.data_dir = tempfile.mkdtemp(prefix="celeriac-paired-")
        broker = self._start(
            root,
            "broker",
            ["-m", "broker", "serve", "--port", "0"],
            {"CELERIAC_BROKER_DATA_DIR": self.data_dir},
        )
        self.address = broker.wait_for_line(LISTENING).group(1)
        worker = self._start(
            root,
            "worker",
            ["-m", "worker", "--tasks", "bench.tasks_celeriac", "--broker", self.address],
        )
        worker.wait_for_line(r"worker ready")

    def _start(
        self, root: Path, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        process = ManagedProcess.python(f"{name}-{root.name}", args, env, root=root)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _block(round_trip: Callable[[], Any], trips: int) -> list[float]:
    samples = []
    for _ in range(trips):
        started = time.perf_counter()
        round_trip()
        samples.append(time.perf_counter() - started)
    return samples


def compare(root_a: Path, root_b: Path, blocks: int, trips: int) -> str:
    """Run the paired comparison; returns a one-line summary (times in ms, differences in µs)."""
    from bench.tasks_celeriac import make_app

    systems: list[_System] = []
    try:
        systems = [_System(root_a), _System(root_b)]
        apps = [make_app(system.address) for system in systems]
        trips_of = [
            lambda app=app: app.add.delay(1, 2).get(timeout=ROUND_TRIP_TIMEOUT) for app in apps
        ]
        for round_trip in trips_of:
            _block(round_trip, WARMUP)
        samples: list[list[float]] = [[], []]
        differences = []
        for index in range(blocks):
            medians = {}
            for side in (0, 1) if index % 2 == 0 else (1, 0):
                block = _block(trips_of[side], trips)
                samples[side] += block
                medians[side] = statistics.median(block)
            differences.append(medians[1] - medians[0])
        for app in apps:
            app.app.close()
    finally:
        for system in systems:
            system.stop()
    a, b = ([1000 * percentile(s, q) for q in (0.5, 0.99)] for s in samples)
    return (
        f"A p50 {a[0]:.3f} p99 {a[1]:.3f} | B p50 {b[0]:.3f} p99 {b[1]:.3f} | "
        f"block-median difference B-A: median {1e6 * statistics.median(differences):+.0f} us, "
        f"mean {1e6 * statistics.fmean(differences):+.0f} us"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and print the comparison."""
    parser = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__)
    parser.add_argument("root_a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("root_b", type=Path, help="checkout B (the change)")
    parser.add_argument("--blocks", type=int, default=16, help="block pairs (default 16)")
    parser.add_argument("--trips", type=int, default=100, help="round trips per block")
    args = parser.parse_args(argv)
    for root in (args.root_a, args.root_b):
        if not (root / "broker" / "__main__.py").exists():
            parser.error(f"{root} is not a checkout of this project")
    print(compare(args.root_a.resolve(), args.root_b.resolve(), args.blocks, args.trips))
    return 0


if __name__ == "__main__":
    sys.exit(main())
