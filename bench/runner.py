"""Runs scenarios on every system, alternating the order of systems from run to run.

For each variant the systems are started side by side (or afresh for every run when the variant
asks for a clean broker), then run r measures A then B on even runs and B then A on odd ones, so
slow drift of the machine (another engineer's tests, thermal state) falls on both sides alike.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from bench.config import BenchConfig
from bench.scenarios import Scenario, Variant
from bench.stats import CpuMeter, summarize
from bench.systems.base import DidNotFinish, System, Unsupported

logger = logging.getLogger(__name__)

SystemFactory = Callable[[], System]
Outcome = dict[str, Any]


@contextmanager
def started(factory: SystemFactory, variant: Variant) -> Iterator[System]:
    """A system running the variant's deployment, stopped on the way out whatever happens."""
    system = factory()
    try:
        system.start(variant.deployment)
        yield system
    finally:
        system.stop()


def measure_once(
    scenario: Scenario, system: System, variant: Variant, config: BenchConfig
) -> dict[str, float]:
    """One run with the CPU of every role metered around it."""
    # The harness is every system's client, in one process: what the last run left behind
    # (tens of thousands of result handles) must be collected now, not inside this run.
    gc.collect()
    meter = CpuMeter(system.roles())
    meter.start()
    figures = scenario.measure(system, variant, config)
    # A scenario that meters a narrower window itself (the drain) keeps its own figures.
    for role, share in meter.stop().items():
        figures.setdefault(role, share)
    return figures


class Runner:
    """Collects every system's figures for every variant of the scenarios it is given."""

    def __init__(
        self,
        factories: dict[str, SystemFactory],
        config: BenchConfig,
        interrupted: threading.Event | None = None,
    ) -> None:
        self.factories = factories
        self.config = config
        # Set by the CLI's signal handler. The KeyboardInterrupt it raises can land in a
        # library's __del__, where Python swallows it; checking here makes it stick.
        self.interrupted = interrupted or threading.Event()

    def _check_interrupted(self) -> None:
        if self.interrupted.is_set():
            raise KeyboardInterrupt

    def run(self, scenarios: Sequence[Scenario]) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for scenario in scenarios:
            logger.info("scenario %s: %s", scenario.name, scenario.description)
            report[scenario.name] = {
                variant.label: self._variant(scenario, variant)
                for variant in scenario.variants(self.config)
            }
        return report

    def _variant(self, scenario: Scenario, variant: Variant) -> dict[str, Outcome]:
        names = list(self.factories)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        problems: dict[str, str] = {}
        live: dict[str, System] = {}
        self._check_interrupted()
        with ExitStack() as stack:
            if not variant.fresh_each_run:
                for name in names:
                    system = self._start(stack, scenario, name, variant, problems)
                    if system is not None:
                        live[name] = system
            for run in range(variant.runs or self.config.runs):
                order = names if run % 2 == 0 else names[::-1]
                for name in order:
                    self._check_interrupted()
                    if name in problems:
                        continue
                    logger.info("%s %s %s run %d", scenario.name, variant.label, name, run + 1)
                    self._run_once(scenario, name, variant, live, samples, problems)
        return {name: self._outcome(samples[name], problems.get(name)) for name in names}

    def _start(
        self,
        stack: ExitStack,
        scenario: Scenario,
        name: str,
        variant: Variant,
        problems: dict[str, str],
    ) -> System | None:
        try:
            system = stack.enter_context(started(self.factories[name], variant))
            scenario.prepare(system, variant, self.config)
        except Unsupported as exc:
            problems[name] = f"skipped: {exc}"
            return None
        except Exception as exc:
            logger.exception("%s failed to start for %s %s", name, scenario.name, variant.label)
            problems[name] = f"error: {exc}"
            return None
        return system

    def _run_once(
        self,
        scenario: Scenario,
        name: str,
        variant: Variant,
        live: dict[str, System],
        samples: dict[str, list[dict[str, float]]],
        problems: dict[str, str],
    ) -> None:
        with ExitStack() as stack:
            system = live.get(name)
            if system is None:
                system = self._start(stack, scenario, name, variant, problems)
                if system is None:
                    return
            try:
                samples[name].append(measure_once(scenario, system, variant, self.config))
            except Unsupported as exc:
                problems[name] = f"skipped: {exc}"
            except DidNotFinish as exc:
                logger.warning("%s %s %s: %s", name, scenario.name, variant.label, exc)
                problems[name] = str(exc)
                # Now, not at the variant's end: its processes may still be busy with the run,
                # and the other systems' runs must not share the machine with them.
                if live.pop(name, None) is not None:
                    system.stop()
            except Exception as exc:
                logger.exception("%s failed in %s %s", name, scenario.name, variant.label)
                problems[name] = f"error: {exc}"

    @staticmethod
    def _outcome(runs: list[dict[str, float]], problem: str | None) -> Outcome:
        figures = {key: summarize([run[key] for run in runs]) for key in runs[0]} if runs else {}
        return {"figures": figures, "problem": problem}
