"""Issue 4's performance bar, checked against a report: which figures meet it and by how much.

Reported, never asserted: the benchmark says where Celeriac stands, tests do not time anything.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KIB = 1024


@dataclass(frozen=True)
class Target:
    """One line of the bar: a figure (Celeriac's median, or its ratio to Celery) vs a limit."""

    label: str
    scenario: str
    variant: str
    figure: str
    limit: float
    at_least: bool = True
    ratio: bool = False
    strict: bool = False


TARGETS = (
    Target(
        "end-to-end throughput >= 10x Celery",
        "throughput",
        "pool=process",
        "tasks/s",
        10,
        ratio=True,
    ),
    Target("end-to-end throughput >= 11,000/s", "throughput", "pool=process", "tasks/s", 11_000),
    Target("batch submit >= 50,000/s", "enqueue", "no workers", "batch tasks/s", 50_000),
    Target(
        "delay() no slower than Celery", "enqueue", "no workers", "delay() tasks/s", 1, ratio=True
    ),
    Target("round trip p50 <= 1.0 ms", "latency", "pool=process", "p50 ms", 1.0, at_least=False),
    Target("round trip p99 <= 2.0 ms", "latency", "pool=process", "p99 ms", 2.0, at_least=False),
    Target(
        "<= 1 KiB per queued task (100k)",
        "memory",
        "queued=100,000",
        "bytes/task",
        KIB,
        at_least=False,
    ),
    Target(
        "<= 1 KiB per queued task (1M)",
        "memory",
        "queued=1,000,000",
        "bytes/task",
        KIB,
        at_least=False,
    ),
    Target(
        "100 idle workers < 2% of a core",
        "scaling",
        "idle workers=100",
        "idle broker cpu %",
        2,
        at_least=False,
        strict=True,
    ),
)


def _value(document: dict[str, Any], target: Target) -> float | None:
    outcome = document["scenarios"].get(target.scenario, {}).get(target.variant, {})
    if target.ratio:
        ratio = outcome.get("ratios", {}).get("celery", {}).get(target.figure)
        return None if ratio is None else float(ratio)
    figure = outcome.get("celeriac", {}).get("figures", {}).get(target.figure)
    return None if figure is None else float(figure["median"])


def check(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with Celeriac's value and whether it is met (None when not measured)."""
    rows = []
    for target in TARGETS:
        value = _value(document, target)
        compare: Callable[[float, float], bool] = {
            (True, False): operator.ge,
            (True, True): operator.gt,
            (False, False): operator.le,
            (False, True): operator.lt,
        }[target.at_least, target.strict]
        met = None if value is None else compare(value, target.limit)
        rows.append({"target": target.label, "value": value, "met": met})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """The bar as text lines: met / MISSED / not measured, with the measured value."""
    lines = ["The bar (issue 4):"]
    for row in rows:
        value = row["value"]
        shown = "-" if value is None else f"{value:,.2f}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        lines.append(f"  {verdict:<12} {row['target']:<40} {shown}")
    return "\n".join(lines)
