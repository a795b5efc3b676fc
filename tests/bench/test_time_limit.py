"""A run that outlasts its time limit reads "did not finish in N s" and its system stops at once.

The stalled system here is a stand-in whose workflow never completes (its result's ``get``
times out as a real client's does); the runner must report it, stop it before the next
system's run, and still measure the other system.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Any

from bench.config import BenchConfig
from bench.runner import Runner
from bench.scenarios.workflows import Workflows
from bench.systems.base import Deployment

LIMIT = 0.2


class NeverDone:
    """A workflow's result that never arrives: get() waits out its timeout, as Celery's does."""

    class TimeoutError(Exception):  # named like celery.exceptions.TimeoutError
        pass

    def get(self, timeout: float) -> Any:
        threading.Event().wait(timeout)
        raise NeverDone.TimeoutError("The operation timed out.")


class StandIn:
    """A system measured in-process: its roles are this process, its workflows instant."""

    def __init__(self, name: str, stalls: bool, log: list[str]) -> None:
        self.name = name
        self.stalls = stalls
        self.log = log

    def start(self, deployment: Deployment) -> None:
        self.log.append(f"{self.name} start")

    def stop(self) -> None:
        self.log.append(f"{self.name} stop")

    def roles(self) -> dict[str, list[int]]:
        return {"client": [os.getpid()]}

    def _run(self, what: str, size: int, timeout: float) -> None:
        from bench.systems.base import check_answer, collect

        self.log.append(f"{self.name} {what}")
        if self.stalls:
            collect(what, NeverDone(), timeout)
        check_answer(what, size, size)

    def run_chord(self, members: int, timeout: float) -> None:
        self._run("chord", members, timeout)

    def run_chain(self, links: int, timeout: float) -> None:
        self._run("chain", links, timeout)


def test_a_run_past_its_time_limit_reads_did_not_finish_and_its_system_stops_at_once() -> None:
    log: list[str] = []
    config = dataclasses.replace(
        BenchConfig.quick(), runs=2, chord_members=10, chain_links=5, run_time_limit=LIMIT
    )
    # Only what the workflows scenario and the runner use: not the whole System protocol.
    factories: dict[str, Any] = {
        "stalls": lambda: StandIn("stalls", True, log),
        "finishes": lambda: StandIn("finishes", False, log),
    }
    runner = Runner(factories, config)
    report = runner.run([Workflows()])["workflows"]
    chord = report["chord members=10"]
    assert chord["stalls"] == {"figures": {}, "problem": "did not finish in 0.2 s (chord)"}
    assert chord["finishes"]["problem"] is None
    assert len(chord["finishes"]["figures"]["seconds"]["runs"]) == 2
    # Stopped before the other system's run, and never run again in that variant.
    first_variant = log[: log.index("finishes stop") + 1]
    assert first_variant == [
        "stalls start",
        "finishes start",
        "stalls chord",
        "stalls stop",
        "finishes chord",
        "finishes chord",
        "finishes stop",
    ]
    assert report["chain links=5"]["stalls"]["problem"] == "did not finish in 0.2 s (chain)"
