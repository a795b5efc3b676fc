"""The rate-limit scenario runs end to end at a tiny size (a smoke test: no figure asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.scenarios.rate_limit import rate_figures
from tests.support import run_python


def test_the_busiest_window_and_achieved_rate_are_computed_from_start_times() -> None:
    figures = rate_figures([0.0, 0.1, 0.2, 1.05, 1.1, 2.0], 5.0)
    assert figures["achieved tasks/s"] == 2.5
    assert figures["busiest 1 s window tasks"] == 3
    assert figures["achieved / limit %"] == 50


def test_quick_rate_limit_run_reports_the_achieved_rate(tmp_path: Path) -> None:
    completed = run_python(
        "-m", "bench", "--quick", "--scenario", "rate_limit", "--out", str(tmp_path),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    (outcome,) = document["scenarios"]["rate_limit"].values()
    celeriac = outcome["celeriac"]
    assert celeriac["problem"] is None
    assert celeriac["figures"]["achieved tasks/s"]["median"] > 0
