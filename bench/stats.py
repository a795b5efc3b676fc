"""Summaries of repeated measurements: medians with spread, latency percentiles, CPU shares."""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.processes import cpu_seconds, descendants


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (fraction in 0..1) of samples."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(values: Sequence[float]) -> dict[str, object]:
    """Median, min, max and every run's value."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def client_cpu_seconds() -> float:
    """CPU seconds this (client) process has used, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU used per role between start() and stop(), as percent of one core.

    100% means one core was busy the whole time; on a 2-core machine the total can reach 200%.
    """

    roles: Mapping[str, Sequence[int]]

    def start(self) -> None:
        self._pids = {role: self._tree(roots) for role, roots in self.roles.items()}
        self._before = {role: cpu_seconds(pids) for role, pids in self._pids.items()}
        self._client_before = client_cpu_seconds()
        self._started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self._started
        # Children started during the window (a replaced pool child) are picked up here.
        shares = {}
        for role, roots in self.roles.items():
            pids = set(self._tree(roots)) | set(self._pids[role])
            used = cpu_seconds(sorted(pids)) - self._before[role]
            shares[f"cpu {role} %"] = 100 * used / elapsed
        shares["cpu client %"] = 100 * (client_cpu_seconds() - self._client_before) / elapsed
        return shares

    @staticmethod
    def _tree(roots: Sequence[int]) -> list[int]:
        return [pid for root in roots for pid in descendants(root)]
