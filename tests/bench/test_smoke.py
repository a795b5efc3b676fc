"""The benchmark harness runs end to end: `python -m bench --quick` on a tiny throughput run.

It checks that the report has the expected shape and that every task came back; it asserts no
timing (figures are reported by the benchmark, never tested).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_python

TASKS = 200
# A quick run starts a broker and workers per variant: throughput's six take about 20 s on a
# quiet 2-core machine and 60 s at a load average of 10.
QUICK_RUN_TIMEOUT = 150.0


@pytest.mark.timeout(QUICK_RUN_TIMEOUT + 30)
def test_quick_throughput_run_reports_every_pool(tmp_path: Path) -> None:
    completed = run_python(
        "-m", "bench", "--quick",
        "--scenario", "throughput", "--tasks", str(TASKS), "--out", str(tmp_path),
        timeout=QUICK_RUN_TIMEOUT,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "tasks/s" in completed.stdout

    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["meta"]["systems"] == ["celeriac"]
    assert document["meta"]["machine"]["cores"] >= 1
    for moment in ("before", "after"):
        assert document["meta"]["wakeups"][moment]["pipe round trip us"] > 0
    assert "process wake-up round trip" in completed.stdout
    variants = document["scenarios"]["throughput"]
    drains = {"pool=process, drain", "pool=process, drain, prefetch=8"}
    drains.add("pool=process, drain, prefetch=128")
    assert set(variants) == {"pool=process", "pool=thread", "pool=async", *drains}
    for label, outcome in variants.items():
        celeriac = outcome["celeriac"]
        assert celeriac["problem"] is None
        figures = celeriac["figures"]
        assert {"tasks/s", "cpu broker %", "cpu worker %", "cpu client %"} <= set(figures)
        assert figures["tasks/s"]["median"] > 0
        if label in drains:
            # Metered over the drain alone, while the worker started for it ran.
            assert figures["cpu worker %"]["median"] > 0
        else:
            assert figures["completed"]["runs"] == [TASKS]


def test_the_transport_floor_runs_through_a_pool_child() -> None:
    completed = run_python("-m", "bench.transport_floor", "--child", "--trips", "50")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("child=True") and "p50" in completed.stdout


def test_the_wake_up_probe_reports_a_round_trip() -> None:
    completed = run_python("-m", "bench.wakeups")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("process wake-up round trip")


def test_the_paired_comparison_runs_two_systems_side_by_side() -> None:
    root = str(Path(__file__).resolve().parents[2])
    completed = run_python("-m", "bench.paired", root, root, "--blocks", "2", "--trips", "5")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.startswith("A p50") and "B-A" in completed.stdout


@pytest.mark.timeout(QUICK_RUN_TIMEOUT + 30)
def test_the_tls_and_token_variant_runs_beside_plain_celeriac(tmp_path: Path) -> None:
    completed = run_python(
        "-m", "bench", "--quick", "--secure", "--scenario", "latency", "--out", str(tmp_path),
        timeout=QUICK_RUN_TIMEOUT,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["meta"]["systems"] == ["celeriac", "celeriac-tls"]
    measured = 0
    for label, outcome in document["scenarios"]["latency"].items():
        secure = outcome["celeriac-tls"]
        if "client=node" in label:  # the Node.js example speaks plain text only
            assert secure["problem"].startswith("skipped: ")
            continue
        assert secure["problem"] is None
        assert secure["figures"]["p50 ms"]["median"] > 0
        measured += 1
    assert measured >= 2  # the process and solo pools from the Python client


@pytest.mark.timeout(300)
def test_the_postgres_variants_run_one_two_and_three_brokers(tmp_path: Path) -> None:
    completed = run_python(
        "-m", "bench", "--quick", "--postgres", "--scenario", "enqueue", "--out", str(tmp_path),
        timeout=280,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    clusters = ["celeriac-pg1", "celeriac-pg2", "celeriac-pg3"]
    assert document["meta"]["systems"] == ["celeriac", *clusters]
    for outcome in document["scenarios"]["enqueue"].values():
        for name in clusters:
            assert outcome[name]["problem"] is None
            rates = {k: v for k, v in outcome[name]["figures"].items() if k.endswith("/s")}
            assert rates
            assert all(figure["median"] > 0 for figure in rates.values())
    assert "bytes per row" in completed.stderr


def test_quick_workflows_run_times_a_chord_and_a_chain(tmp_path: Path) -> None:
    completed = run_python(
        "-m", "bench", "--quick", "--scenario", "workflows", "--out", str(tmp_path),
        timeout=120.0,  # a broker and a worker start for each variant; the machine is shared
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    variants = json.loads((tmp_path / "latest.json").read_text())["scenarios"]["workflows"]
    assert set(variants) == {"chord members=50", "chain links=20"}
    for outcome in variants.values():
        celeriac = outcome["celeriac"]
        assert celeriac["problem"] is None
        assert celeriac["figures"]["seconds"]["median"] > 0
