"""Coordination across brokers sharing one PostgreSQL database, through real processes.

Periodic ticks fire once however many brokers run (one leader arms them, the next carries on
after a kill -9), and workflows (chain, chord) complete when their members run on workers of
different brokers.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Started
from tests.e2e.test_periodic import assert_one_run_per_tick, runs_of
from tests.e2e.test_postgres_cluster import _brokers
from tests.support import WorkerProcess, wait_until

PERIODIC_TASKS = "tests.e2e.periodic_tasks"
LEADS = "this broker runs the periodic tasks"


@pytest.mark.timeout(120)
def test_a_periodic_tick_runs_once_across_brokers_and_after_the_leader_is_killed(
    postgres_url: str, cleanup: list[Started]
) -> None:
    (leader,) = _brokers(postgres_url, 1, cleanup)
    leader.wait_for_line(LEADS)
    followers = _brokers(postgres_url, 2, cleanup)
    # The leader has no worker: its runs reach the others' workers through the shared pool,
    # each written in the same transaction as the tick's progress.
    workers = [
        WorkerProcess(broker.address, PERIODIC_TASKS, "--pool", "thread") for broker in followers
    ]
    cleanup.extend(workers)
    # Both workers declared the entry; ten ticks, each claimed by either worker.
    wait_until(lambda: len(runs_of(*workers)) >= 10, timeout=30, message="ten periodic runs")
    assert not any(LEADS in broker.output for broker in followers)
    runs = runs_of(*workers)
    assert_one_run_per_tick(runs)

    leader.stop_hard()
    wait_until(
        lambda: any(LEADS in broker.output for broker in followers),
        timeout=20,
        message="another broker taking the lead",
    )
    # Ten more runs after the first run of the new leader.
    after = len(runs_of(*workers))
    wait_until(lambda: len(runs_of(*workers)) >= after + 10, timeout=30, message="ten more runs")
    runs = runs_of(*workers)
    ids = [task_id for _, _, task_id in runs]
    assert len(set(ids)) == len(ids), f"a tick ran twice: {runs}"
    # One run per tick, the new leader carrying on from the last tick the old one recorded
    # (a takeover slower than a period shows as one catch-up run counting the ticks missed).
    assert_one_run_per_tick(runs)
