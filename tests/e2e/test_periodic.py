"""Periodic tasks run by the broker through real workers: one run per tick, across restarts."""

from __future__ import annotations

import itertools
import re
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.e2e.periodic_tasks import PERIOD
from tests.support import BrokerProcess, WorkerProcess, run_python, wait_until

StartWorker = Callable[..., WorkerProcess]
TASKS = "tests.e2e.periodic_tasks"
RUN = re.compile(r"BEAT fast tick=(\S+) missed=(\d+) id=(\S+)")
# Ticks the broker stays down across in the kill -9 test, so its catch-up stands for several.
DOWN_PERIODS = 4


def runs_of(*workers: WorkerProcess) -> list[tuple[float, int, str]]:
    """(tick, missed ticks, task id) of every run the workers printed, by tick."""
    found = []
    for worker in workers:
        for line in worker.output.splitlines():
            if match := RUN.search(line):
                tick = datetime.fromisoformat(match.group(1)).timestamp()
                found.append((tick, int(match.group(2)), match.group(3)))
    return sorted(found)


def assert_one_run_per_tick(runs: list[tuple[float, int, str]], *, killed: bool = False) -> None:
    """Each run's tick is one period after the previous run's, plus the ticks it says it missed
    (the broker was down, or its loop stalled longer than a period): none ran twice.

    With ``killed``, a catch-up may also count the tick just before it: that run was handed to
    the worker in the instant before the broker recorded it when kill -9 struck, so the restarted
    broker counts its tick among the missed (it runs at least once, never twice).
    """
    for (earlier, _, _), (later, missed, _) in itertools.pairwise(runs):
        periods = round((later - earlier) / PERIOD)
        allowed = {missed + 1, missed} if killed and missed else {missed + 1}
        assert periods in allowed and abs(later - earlier - periods * PERIOD) < 0.002, "\n".join(
            map(str, runs)
        )


def wait_for_runs(worker: WorkerProcess, count: int, start: int = 0) -> None:
    for _ in range(count):
        worker.wait_for_line(RUN.pattern, start=start)
        start = worker.line_count()


def test_an_interval_entry_runs_once_per_tick_however_many_workers_declare_it(
    broker_process: BrokerProcess, start_worker: StartWorker
) -> None:
    first = start_worker("--pool", "thread", tasks=TASKS)
    second = start_worker("--pool", "thread", tasks=TASKS)
    wait_for_runs(first, 2)
    wait_for_runs(second, 2)
    runs = runs_of(first, second)
    ticks = [tick for tick, _, _ in runs]
    assert len(set(ticks)) == len(ticks), f"a tick ran twice: {runs}"
    assert len({task_id for _, _, task_id in runs}) == len(runs)
    assert_one_run_per_tick(runs)

    listing = run_python("-m", "broker", "periodic", "list", "--broker", broker_process.address)
    assert listing.returncode == 0, listing.stderr
    assert "heartbeat" in listing.stdout and "every 0.2s" in listing.stdout
    assert "half-hourly" in listing.stdout and "*/30 * * * * (Asia/Kathmandu)" in listing.stdout
    # Every 30 minutes of Kathmandu's wall clock (UTC+5:45) falls at :15 or :45 UTC.
    next_tick = re.search(r"half-hourly .*?(\S+)\s*$", listing.stdout, re.MULTILINE)
    assert next_tick, listing.stdout
    assert datetime.fromisoformat(next_tick.group(1)).minute in {15, 45}, listing.stdout
    removed = run_python(
        "-m", "broker", "periodic", "remove", "half-hourly", "--broker", broker_process.address
    )
    assert removed.returncode == 0, removed.stderr
    again = run_python(
        "-m", "broker", "periodic", "remove", "half-hourly", "--broker", broker_process.address
    )
    assert again.returncode == 1 and "no periodic task named 'half-hourly'" in again.stderr


def test_kill_9_of_the_broker_repeats_no_tick_and_runs_one_catch_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    broker = BrokerProcess("--data-dir", str(data_dir), "--lease-grace", "0.5")
    port = int(broker.address.rsplit(":", 1)[1])
    worker = WorkerProcess(broker.address, TASKS, "--pool", "thread")
    try:
        wait_for_runs(worker, 2)
        broker.stop_hard()
        mark = worker.line_count()
        # Down across several ticks, whatever a restart takes: a restart faster than two
        # periods owes only one tick, run late but with none missed (this test's old flake).
        down_until = time.time() + DOWN_PERIODS * PERIOD
        wait_until(lambda: time.time() >= down_until, message="the clock never moved")
        broker = BrokerProcess("--data-dir", str(data_dir), port=port)
        worker.wait_for_line(r"BEAT fast tick=\S+ missed=[1-9]", start=mark)
        wait_for_runs(worker, 2, start=worker.line_count())
    finally:
        worker.stop()
        broker.stop()
    runs = runs_of(worker)
    by_tick: dict[float, set[str]] = defaultdict(set)
    for tick, _, task_id in runs:
        by_tick[tick].add(task_id)
    assert all(len(ids) == 1 for ids in by_tick.values()), "\n".join(map(str, runs))
    # The downtime ended in one catch-up run that counts the ticks it stood for.
    distinct = sorted({tick: (tick, missed, task_id) for tick, missed, task_id in runs}.values())
    assert_one_run_per_tick(distinct, killed=True)
