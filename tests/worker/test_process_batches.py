"""The process pool's batched hand-off: short tasks travel to a child in batches.

Each test first runs quick tasks until the pool's measured speed lets it batch (its capacity
exceeds its slots); with one free child and a capacity of at least N, N jobs submitted together
are sent to that child in one batch.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.worker.test_pools import job, value, wait_for_path, with_pool
from worker import pools
from worker.errors import NotStarted
from worker.jobs import OutcomeState, TaskEvent


async def warm_up(pool: pools.Pool, batch: int) -> None:
    """Run quick tasks until the pool sends at least `batch` jobs to a child at once."""
    while pool.capacity < batch * pool.slots:
        assert value(await pool.submit(job("add", 1, 1))) == 2


def test_quick_tasks_are_batched_and_each_gets_its_own_outcome_in_order() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        assert pool.capacity == pool.slots  # nothing measured yet: one job per child
        await warm_up(pool, 8)
        outcomes = await asyncio.gather(*(pool.submit(job("add", n, n)) for n in range(200)))
        assert [value(o) for o in outcomes] == [2 * n for n in range(200)]

    with_pool("process", 2, body)


def test_terminate_of_a_job_waiting_in_a_batch_revokes_it_without_running_it(
    tmp_path: Path,
) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        await warm_up(pool, 3)
        release, target_path = tmp_path / "release", tmp_path / "target"
        first = pool.submit(job("wait_for_file", str(release)))
        target = job("wait_for_file", str(target_path))
        queued = pool.submit(target)
        after = pool.submit(job("add", 2, 2))
        await wait_for_path(tmp_path / "release.started")
        assert pool.terminate(target.lease_id, "revoked by test")
        revoked = await queued
        assert revoked.state is OutcomeState.REVOKED and revoked.error is not None
        assert "revoked by test" in revoked.error.message
        release.touch()
        assert value(await first) == "released"
        assert value(await after) == 4  # the child went past the revoked job...
        assert not (tmp_path / "target.started").exists()  # ...without running it

    with_pool("process", 1, body)


def test_a_child_killed_mid_batch_fails_its_running_job_and_the_rest_run_elsewhere(
    tmp_path: Path,
) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        await warm_up(pool, 4)
        victim = value(await pool.submit(job("pid")))
        running = pool.submit(job("wait_for_file", str(tmp_path / "never")))
        queued = [pool.submit(job("pid")) for _ in range(3)]
        await wait_for_path(tmp_path / "never.started")
        assert isinstance(victim, int)
        os.kill(victim, signal.SIGKILL)
        lost = await running
        assert lost.state is OutcomeState.RETRY and lost.error is not None
        assert lost.error.type == "worker.errors.WorkerLostError"
        pids = {value(outcome) for outcome in await asyncio.gather(*queued)}
        assert len(pids) == 1 and victim not in pids  # all ran, on the replacement child

    with_pool("process", 1, body)


def test_jobs_queued_behind_a_long_task_move_to_another_child(tmp_path: Path) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        await warm_up(pool, 4)
        release = tmp_path / "release"
        # Shared out evenly: the first child gets the long task and one pid job.
        long = pool.submit(job("pid_then_wait_for_file", str(release)))
        jobs = [pool.submit(job("pid")) for _ in range(3)]
        await wait_for_path(tmp_path / "release.started")
        # Every pid job finishes while the long task still holds its child.
        pids = {value(outcome) for outcome in await asyncio.gather(*jobs)}
        assert not long.done()
        release.touch()
        assert value(await long) == "released"
        long_pid = int((tmp_path / "release.pid").read_text())
        assert len(pids) == 1 and long_pid not in pids

    with_pool("process", 2, body)


def test_a_job_with_a_time_limit_runs_alone_and_is_killed_alone() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        await warm_up(pool, 4)
        before = [pool.submit(job("add", n, 1)) for n in range(3)]
        limited = pool.submit(job("sleeps", 30, time_limit=0.2))
        after = [pool.submit(job("add", n, 2)) for n in range(3)]
        outcome = await limited
        assert outcome.state is OutcomeState.FAILURE and outcome.error is not None
        assert outcome.error.type == "client.errors.TimeLimitExceeded"
        assert [value(o) for o in await asyncio.gather(*before)] == [1, 2, 3]
        assert [value(o) for o in await asyncio.gather(*after)] == [2, 3, 4]

    with_pool("process", 1, body)


def test_jobs_stuck_behind_a_long_task_with_no_free_child_go_back_to_the_worker(
    tmp_path: Path,
) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        await warm_up(pool, 4)
        release = tmp_path / "release"
        long = pool.submit(job("pid_then_wait_for_file", str(release)))
        stuck = [pool.submit(job("pid")) for _ in range(3)]
        await wait_for_path(tmp_path / "release.started")
        # The only child is busy: the pool gives the waiting jobs back unstarted, so the
        # worker's prefetch hold limit can return them to the broker.
        for future in stuck:
            with pytest.raises(NotStarted):
                await future
        assert not long.done()
        release.touch()
        assert value(await long) == "released"

    with_pool("process", 1, body)


def _voluntary_switches(pid: int) -> int:
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("voluntary_ctxt"))[24:])


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_child_sleeps_once_per_job_and_is_not_woken_when_the_parent_reads_its_outcome() -> None:
    # One duplex pipe (a socket pair) woke the child a second time for every job: a socket wakes
    # a reader blocked on it whenever its peer reads. One-way pipes wake it only for work.
    jobs = 200

    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        child = value(await pool.submit(job("pid")))
        assert isinstance(child, int)
        before = _voluntary_switches(child)
        for n in range(jobs):  # one at a time: every job finds the child asleep
            assert value(await pool.submit(job("add", n, n))) == 2 * n
        assert _voluntary_switches(child) - before < 1.5 * jobs

    with_pool("process", 1, body)
