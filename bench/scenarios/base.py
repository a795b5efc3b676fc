"""The shape every scenario has: variants to deploy, and one measured run on a started system."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from bench.config import BenchConfig
from bench.systems.base import Deployment, System


@dataclass(frozen=True)
class Variant:
    """One deployment of a scenario, measured `runs` times on every system.

    Attributes:
        label: how the table names it, e.g. "pool=thread".
        deployment: what runs beside the broker.
        fresh_each_run: start a new system for every run (memory figures need a clean broker).
        size: the scenario's main parameter for this variant (a depth, a worker count).
        runs: runs for this variant when it differs from the configured count.
    """

    label: str
    deployment: Deployment = field(default_factory=Deployment)
    fresh_each_run: bool = False
    size: int = 0
    runs: int | None = None


class Scenario(Protocol):
    """A scenario; `measure` returns figures named with their unit, e.g. "tasks/s"."""

    name: str
    description: str

    def variants(self, config: BenchConfig) -> list[Variant]:
        """The deployments this scenario measures."""

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        """Set the started system up before its runs (fill a backlog); may raise Unsupported."""

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        """One measured run."""
