"""Workflows: a chord of many members and a long chain, end to end, on both systems.

A chord of N no-op members whose body counts their results (Celery's Redis backend counts the
members in Redis; Celeriac's broker releases the body when the last result is recorded), and a
chain of N links each adding one to the result of the one before. Each is sent as one workflow
and timed until its final result is back in the client, or until ``run_time_limit``: past it
the row reads "did not finish in N s".
"""

from __future__ import annotations

import time

from bench.config import BenchConfig
from bench.scenarios.base import Variant
from bench.systems.base import Deployment, System

CHORD = "chord"
CHAIN = "chain"


class Workflows:
    name = "workflows"
    description = "seconds for a chord of N members, and for a chain of N links, until the result"

    def variants(self, config: BenchConfig) -> list[Variant]:
        return [
            Variant(
                f"{CHORD} members={config.chord_members:,}", Deployment(), size=config.chord_members
            ),
            Variant(f"{CHAIN} links={config.chain_links:,}", Deployment(), size=config.chain_links),
        ]

    def prepare(self, system: System, variant: Variant, config: BenchConfig) -> None:
        pass

    def measure(self, system: System, variant: Variant, config: BenchConfig) -> dict[str, float]:
        started = time.perf_counter()
        if variant.label.startswith(CHORD):
            system.run_chord(variant.size, config.run_time_limit)
        else:
            system.run_chain(variant.size, config.run_time_limit)
        seconds = time.perf_counter() - started
        tasks = variant.size + 1 if variant.label.startswith(CHORD) else variant.size
        return {"seconds": seconds, "tasks/s": tasks / seconds}
