"""Round-trip latency: sequential `add.delay(1, 2).get()` calls, percentiles in milliseconds.

Besides the Python client, Celeriac is measured from Node.js (examples/node/round_trips.js, the
same calls written against proto/ alone) over the Session stream and over unary calls, with the
solo pool, so its figures compare with `pool=solo` of the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.stats import percentile
from bench.systems.base import Deployment, System, Unsupported

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"

POOLS = ("process", "solo")
NODE_MODES = ("session", "unary")
NODE_LABEL = "pool=solo, client=node "


def round_trips(system: System, count: int, warmup: int) -> dict[str, float]:
    """Time count sequential round trips after warmup untimed ones; percentiles in ms."""
    for _ in range(warmup):
        system.round_trip()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        system.round_trip()
        samples.append(1000 * (time.perf_counter() - started))
    return summary(samples)


def summary(samples: list[float]) -> dict[str, float]:
    """Percentiles and mean of round-trip samples in milliseconds."""
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
        python = [Variant(f"pool={pool}", Deployment(pool=pool)) for pool in POOLS]
        node = [Variant(NODE_LABEL + mode, Deployment(pool="solo")) for mode in NODE_MODES]
        return [*python, *node]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        pass

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        if variant.label.startswith(NODE_LABEL):
            mode = variant.label.removeprefix(NODE_LABEL)
            return summary(node_round_trips(system, mode, config))
        return round_trips(system, config.round_trips, config.warmup_round_trips)


def node_round_trips(system: System, mode: str, config: BenchConfig) -> list[float]:
    """Samples of ``node examples/node/round_trips.js`` against a Celeriac system's broker."""
    address = getattr(system, "address", "")
    node = shutil.which("node")
    if not address or not hasattr(system, "bench"):
        raise Unsupported("only Celeriac is measured from Node.js")
    if not getattr(system, "plain_text", True):
        raise Unsupported("the Node.js example speaks plain text, without TLS or a token")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        raise Unsupported("needs node and examples/node/node_modules (npm ci there)")
    args = [str(config.round_trips), str(config.warmup_round_trips)]
    completed = subprocess.run(
        [node, str(NODE_DIR / "round_trips.js"), mode, *args],
        env={**os.environ, "CELERIAC_BROKER": address},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode:
        raise RuntimeError(f"node round trips failed: {completed.stderr.strip()[-500:]}")
    samples: list[float] = json.loads(completed.stdout)["samples"]
    return samples
