"""Coordination across brokers sharing one PostgreSQL database, through real processes.

Periodic ticks fire once however many brokers run (one leader arms them, the next carries on
after a kill -9), and workflows (chain, chord) complete when their members run on workers of
different brokers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Celeriac, GroupResult, Signature, chain, chord, group
from tests.e2e import canvas_tasks as t
from tests.e2e import limited_tasks
from tests.e2e.conftest import Started
from tests.e2e.limited_tasks import RATE
from tests.e2e.test_periodic import assert_one_run_per_tick, runs_of
from tests.e2e.test_postgres_cluster import _brokers
from tests.support import WorkerProcess, wait_until

PERIODIC_TASKS = "tests.e2e.periodic_tasks"
CANVAS_TASKS = "tests.e2e.canvas_tasks"
LIMITED_TASKS = "tests.e2e.limited_tasks"
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


@pytest.fixture
def canvas_workers(postgres_url: str, cleanup: list[Started]) -> Iterator[list[WorkerProcess]]:
    """Brokers A, B and C; a worker on A takes queue "left", one on B "right", C has none."""
    brokers = _brokers(postgres_url, 3, cleanup)
    workers = []
    for broker, queue in zip(brokers, ("left", "right"), strict=False):
        # The tasks module's app (Task.replace submits through it) uses the worker's broker.
        env = {"CELERIAC_BROKER": broker.address}
        workers.append(
            WorkerProcess(
                broker.address, CANVAS_TASKS, "--queues", queue, "--pool", "thread", env=env
            )
        )
    cleanup.extend(workers)
    client_app = Celeriac("canvas-client", broker=brokers[2].address, connect_timeout=10)
    cleanup.append(client_app)
    conf = t.app.conf
    t.app.conf = client_app.conf  # the canvas module's tasks submit through C
    yield workers
    t.app.close()
    t.app.conf = conf


def _on(queue: str, signature: Signature) -> Signature:
    return signature.set(queue=queue)


@pytest.mark.timeout(120)
def test_a_chain_and_a_chord_run_on_two_brokers_workers_submitted_through_a_third(
    canvas_workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # Each link runs on the other broker's worker; C holds the waiting links.
    links = chain(
        _on("left", t.add.s(2, 2)), _on("right", t.add.s(4)), _on("left", t.mul.s(3))
    ).apply_async()
    assert links.get(timeout=30) == 24
    assert links.parent is not None and links.parent.get(timeout=5) == 8
    # The members run on both; the body waits on C for results recorded by A and B.
    summed = chord(_on(("left", "right")[i % 2], t.add.s(i, i)) for i in range(10))(
        _on("right", t.tsum.s())
    )
    assert summed.get(timeout=30) == 90
    # A group saved after its members left C's memory (for the pool): the barrier names
    # tasks other brokers hold.
    members = group(_on(("left", "right")[i % 2], t.add.s(i, 1)) for i in range(4))
    saved = members.apply_async().save()
    restored = GroupResult.restore(saved.id, app=t.app)
    assert restored is not None and restored.get(timeout=30) == [1, 2, 3, 4]
    # A task replaced by one that runs on the other broker's worker (its broker let go of the
    # replacement, for the pool, before the outcome came) takes its result when it finishes,
    # and the chain it heads goes on.
    release = tmp_path / "release"
    replacing = _on("left", t.replaced_on.s(7, str(release), "right"))
    replaced = (replacing | _on("left", t.mul.s(2))).delay()
    canvas_workers[1].wait_for_line("MEMBER 7 RUNNING")
    release.touch()
    assert replaced.get(timeout=30) == 14


@pytest.fixture
def limits_brokers(postgres_url: str, cleanup: list[Started]) -> Iterator[list[WorkerProcess]]:
    """Brokers A and B with a worker each, and C with none, through which the tasks go."""
    brokers = _brokers(postgres_url, 3, cleanup)
    workers = [
        WorkerProcess(broker.address, LIMITED_TASKS, "--pool", "thread", "--concurrency", "4")
        for broker in brokers[:2]
    ]
    cleanup.extend(workers)
    client_app = Celeriac("limits-client", broker=brokers[2].address, connect_timeout=10)
    cleanup.append(client_app)
    conf = limited_tasks.app.conf
    limited_tasks.app.conf = client_app.conf
    yield workers
    limited_tasks.app.close()
    limited_tasks.app.conf = conf


@pytest.mark.timeout(120)
def test_a_rate_limit_holds_across_the_workers_of_two_brokers_together(
    limits_brokers: list[WorkerProcess],
) -> None:
    count = 41
    runs = group(limited_tasks.stamped.s() for _ in range(count)).apply_async().get(timeout=40)
    starts = sorted(started for started, _ in runs)
    assert {pid for _, pid in runs} == {worker.process.pid for worker in limits_brokers}
    achieved = (count - 1) / (starts[-1] - starts[0])
    # Each broker's own gate would let the two reach twice the rate; the shared tokens keep
    # both together at it.
    assert RATE * 0.6 < achieved < RATE * 1.25, f"achieved {achieved:.1f}/s for {RATE}/s"
    for index, start in enumerate(starts):
        within = sum(1 for other in starts[index:] if other - start < 1.0)
        assert within <= RATE * 1.5


@pytest.mark.timeout(120)
def test_a_concurrency_limit_holds_across_the_workers_of_two_brokers_together(
    limits_brokers: list[WorkerProcess],
) -> None:
    runs = group(limited_tasks.exclusive.s(0.05) for _ in range(12)).apply_async().get(timeout=40)
    assert {pid for _, _, pid in runs} == {worker.process.pid for worker in limits_brokers}
    spans = sorted((started, ended) for started, ended, _ in runs)
    for (_, ended), (next_start, _) in itertools.pairwise(spans):
        assert next_start >= ended - 0.005, "two runs of one concurrency key overlapped"


@pytest.mark.timeout(120)
def test_a_slot_held_on_a_broker_killed_9_comes_back_through_the_broker_taking_over(
    postgres_url: str, cleanup: list[Started], tmp_path: Path
) -> None:
    a, b = _brokers(postgres_url, 2, cleanup)
    on_a = WorkerProcess(a.address, LIMITED_TASKS, "--pool", "thread", "--concurrency", "1")
    on_b = WorkerProcess(b.address, LIMITED_TASKS, "--pool", "thread", "--concurrency", "2")
    cleanup += [on_a, on_b]
    apps = [Celeriac("limits-client", broker=x.address, connect_timeout=10) for x in (a, b)]
    cleanup.extend(apps)
    conf = limited_tasks.app.conf
    try:
        limited_tasks.app.conf = apps[0].conf
        flag = tmp_path / "release"
        first = limited_tasks.held.apply_async((str(flag),), concurrency_key="k")
        on_a.wait_for_line(f"HOLDING {first.id}")
        limited_tasks.app.close()
        limited_tasks.app.conf = apps[1].conf
        # B's worker is idle, but the key's one slot is held on A: the second task waits...
        second = limited_tasks.stamped.apply_async(concurrency_key="k", concurrency_limit=1)
        # ... while an unlimited task submitted after it runs on B's worker at once.
        third_started, third_pid = limited_tasks.unlimited.delay().get(timeout=20)
        assert third_pid == on_b.process.pid
        # A task held back at a gate stays its broker's: it never went to the pool for B.
        assert f"HOLDING {first.id}" not in on_b.output
        a.stop_hard()  # B takes A's tasks over; the lease's end gives its slot back
        flag.touch()
        second_started, second_pid = second.get(timeout=40)
        assert second_pid == on_b.process.pid and second_started > third_started
        # The held task ran again on B's worker (A's worker lost its broker).
        assert first.get(timeout=40) == on_b.process.pid
    finally:
        limited_tasks.app.close()
        limited_tasks.app.conf = conf
    on_a.stop_hard()
