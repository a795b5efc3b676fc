"""The report: a plain-text table on stdout and a JSON file under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import wakeups
from bench.config import BenchConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
REFERENCE = "celeriac"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def build(
    results: dict[str, Any], systems: Sequence[str], config: BenchConfig, quick: bool
) -> dict[str, Any]:
    """The JSON document: meta, per-scenario figures, and Celeriac/other ratios of medians."""
    for variants in results.values():
        for outcome in variants.values():
            outcome["ratios"] = _ratios(outcome, systems)
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "systems": list(systems),
            "runs": config.runs,
            "quick": quick,
            "config": {key: value for key, value in vars(config).items()},
        },
        "scenarios": results,
    }


def _ratios(outcome: dict[str, Any], systems: Sequence[str]) -> dict[str, dict[str, float]]:
    ratios: dict[str, dict[str, float]] = {}
    ours = outcome.get(REFERENCE, {}).get("figures", {})
    for other in systems:
        if other == REFERENCE:
            continue

        theirs = outcome.get(other, {}).get("figures", {})
        ratios[other] = {
            key: ours[key]["median"] / theirs[key]["median"]
            for key in ours
            if key in theirs and theirs[key]["median"]
        }
    return ratios


def write(document: dict[str, Any], out: Path) -> Path:
    """Write the document as results-<timestamp>.json and latest.json; return the first path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    text = json.dumps(document, indent=2, sort_keys=False)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path


def _cell(figure: dict[str, Any] | None) -> str:
    if figure is None:
        return "-"
    median, low, high = figure["median"], figure["min"], figure["max"]
    if len(figure["runs"]) == 1:
        return _number(median)
    return f"{_number(median)} ({_number(low)}-{_number(high)})"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(document: dict[str, Any]) -> str:
    """The figures as an aligned text table: median (min-max) per system, then ratios."""
    systems: list[str] = document["meta"]["systems"]
    others = [name for name in systems if name != REFERENCE]
    header = ["scenario", "variant", "figure", *systems, *(f"{REFERENCE}/{o}" for o in others)]
    rows: list[list[str]] = []
    for scenario, variants in document["scenarios"].items():
        for variant, outcome in variants.items():
            rows.extend(_rows(scenario, variant, outcome, systems, others))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    meta = document["meta"]
    lines.append(
        f"\n{meta['date']}  {meta['machine']['cores']} cores  {meta['machine']['cpu']}  "
        f"median (min-max) of {meta['runs']} run(s); cpu % is of one core"
    )
    if "wakeups" in meta:
        before, after = meta["wakeups"]["before"], meta["wakeups"]["after"]
        lines.append(
            f"{wakeups.summary(before)}; after the runs "
            f"{after['pipe round trip us']:.0f} us (python -m bench.wakeups)"
        )
    return "\n".join(lines)


def _rows(
    scenario: str,
    variant: str,
    outcome: dict[str, Any],
    systems: Sequence[str],
    others: Sequence[str],
) -> list[list[str]]:
    keys: list[str] = []
    for name in systems:
        for key in outcome.get(name, {}).get("figures", {}):
            if key not in keys:
                keys.append(key)
    rows = []
    for key in keys:
        cells = [_cell(outcome.get(name, {}).get("figures", {}).get(key)) for name in systems]
        ratios = [outcome.get("ratios", {}).get(other, {}).get(key) for other in others]
        rows.append(
            [scenario, variant, key, *cells, *("-" if r is None else f"{r:.2f}x" for r in ratios)]
        )
    for name in systems:
        problem = outcome.get(name, {}).get("problem")
        if problem:
            padding = [""] * (len(systems) - 1 + len(others))
            rows.append([scenario, variant, f"({name})", problem[:90], *padding])
    return rows
