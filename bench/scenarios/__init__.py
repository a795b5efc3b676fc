"""The scenarios of issue 4, by name, in the order they run."""

from __future__ import annotations

from bench.scenarios.base import Scenario, Variant
from bench.scenarios.enqueue import Enqueue
from bench.scenarios.latency import Latency
from bench.scenarios.memory import Memory
from bench.scenarios.rate_limit import RateLimit
from bench.scenarios.scaling import Scaling
from bench.scenarios.throughput import Throughput
from bench.scenarios.workflows import Workflows

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Throughput(),
        Enqueue(),
        Latency(),
        Memory(),
        Scaling(),
        RateLimit(),
        Workflows(),
    )
}

__all__ = ["SCENARIOS", "Scenario", "Variant"]
