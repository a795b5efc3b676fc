"""Each pool with real children and threads: outcomes, deaths, time limits, terminate, events."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from celeriac.logs import LogSettings
from client import serialization
from tests.worker import tasks_unit
from worker import pools
from worker.collector import YOUNG_THRESHOLD
from worker.execution import ExecutionSettings
from worker.jobs import Job, Outcome, OutcomeState, Payload, TaskEvent

MODULE = "tests.worker.tasks_unit"
PREFIX = MODULE + "."
_ids = iter(range(1, 1_000_000))


def job(name: str, *args: object, **fields: object) -> Job:
    n = next(_ids)
    return Job(
        lease_id=f"lease-{n}",
        task_id=f"task-{n}",
        name=PREFIX + name,
        args=Payload(serialization.JSON, serialization.encode_args(args, {})),
        **fields,  # type: ignore[arg-type]
    )


def value(outcome: Outcome) -> object:
    assert outcome.state is OutcomeState.SUCCESS, outcome
    assert outcome.result is not None
    return serialization.decode(outcome.result.body, outcome.result.content_type)


def with_pool(
    kind: str, size: int, body: Callable[[pools.Pool, list[TaskEvent]], Awaitable[None]]
) -> None:
    events: list[TaskEvent] = []
    context = pools.PoolContext(
        modules=(MODULE,),
        tasks=tasks_unit.app.tasks,
        settings=ExecutionSettings("celeriac@test"),
        on_event=events.append,
        logs=LogSettings(level="WARNING"),
    )

    async def main() -> None:
        pool = pools.create(kind, size, context)
        await pool.start()
        try:
            await asyncio.wait_for(body(pool, events), 30)
        finally:
            await pool.close(0)

    asyncio.run(main())


async def wait_for_path(path: Path) -> None:
    """Wait until a task announces itself by creating `path` (short polls, bounded by the test)."""
    while not path.exists():
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", ["process", "thread", "async", "solo"])
def test_every_pool_runs_sync_and_async_tasks_and_forwards_events(kind: str) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        assert value(await pool.submit(job("add", 2, 3))) == 5
        assert value(await pool.submit(job("async_add", 2, 5))) == 7
        failed = await pool.submit(job("fail", "boom"))
        assert failed.state is OutcomeState.FAILURE and failed.error is not None
        assert failed.error.type == "builtins.ValueError"
        assert value(await pool.submit(job("reports"))) == "ok"
        assert [type(e).__name__ for e in events] == ["StateUpdate", "Heartbeat"]

    with_pool(kind, 1 if kind == "solo" else 2, body)


def test_process_pool_runs_tasks_in_separate_children() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        pids = [
            value(o) for o in await asyncio.gather(*(pool.submit(job("pid")) for _ in range(2)))
        ]
        assert len(set(pids)) == 2 and os.getpid() not in pids

    with_pool("process", 2, body)


def test_process_children_freeze_start_up_objects_and_collect_less_often() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        settings = value(await pool.submit(job("collector_settings")))
        assert isinstance(settings, list)
        threshold, frozen = settings
        assert threshold == YOUNG_THRESHOLD and frozen > 1000

    with_pool("process", 1, body)


def test_a_child_killed_with_sigkill_fails_only_its_task_and_is_replaced(tmp_path: Path) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        victim = value(await pool.submit(job("pid")))
        release = tmp_path / "release"
        running = pool.submit(job("wait_for_file", str(release)))
        await wait_for_path(tmp_path / "release.started")
        assert isinstance(victim, int)
        os.kill(victim, signal.SIGKILL)
        lost = await running
        assert lost.state is OutcomeState.RETRY and lost.error is not None
        assert lost.error.type == "worker.errors.WorkerLostError"
        assert "SIGKILL" in lost.error.message
        replacement = value(await pool.submit(job("pid")))
        assert replacement != victim
        assert value(await pool.submit(job("add", 1, 1))) == 2

    with_pool("process", 1, body)


def test_a_child_that_exits_abruptly_is_replaced() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        lost = await pool.submit(job("exits_abruptly"))
        assert lost.error is not None and "exited with code 3" in lost.error.message
        assert value(await pool.submit(job("add", 2, 2))) == 4

    with_pool("process", 1, body)


def test_hard_time_limit_kills_only_that_child() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        other = pool.submit(job("sleeps", 0.5))
        limited = await pool.submit(job("sleeps", 30, time_limit=0.2))
        assert limited.state is OutcomeState.FAILURE and limited.error is not None
        assert limited.error.type == "client.errors.TimeLimitExceeded"
        assert value(await other) == "woke"
        assert value(await pool.submit(job("add", 3, 3))) == 6

    with_pool("process", 2, body)


def test_soft_time_limit_is_catchable_inside_the_child() -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        outcome = await pool.submit(job("catches_soft_limit", soft_time_limit=0.1, time_limit=20))
        assert value(outcome) == "cleaned up"

    with_pool("process", 1, body)


@pytest.mark.parametrize("kind", ["process", "thread", "async"])
def test_terminate_cancels_a_running_task(kind: str, tmp_path: Path) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        target = job("wait_for_file", str(tmp_path / "never"))
        running = pool.submit(target)
        await wait_for_path(tmp_path / "never.started")
        assert pool.terminate(target.lease_id, "revoked by test")
        outcome = await running
        assert outcome.state is OutcomeState.REVOKED and outcome.error is not None
        assert "revoked by test" in outcome.error.message
        assert value(await pool.submit(job("add", 1, 2))) == 3
        assert not pool.terminate("no-such-lease", "x")

    with_pool(kind, 1, body)


def test_close_with_grace_lets_running_tasks_finish(tmp_path: Path) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        release = tmp_path / "release"
        running = pool.submit(job("wait_for_file", str(release)))
        await wait_for_path(tmp_path / "release.started")
        closing = asyncio.ensure_future(pool.close(20))
        release.touch()
        assert value(await running) == "released"
        await closing

    with_pool("process", 1, body)


def test_close_without_grace_cancels_what_still_runs(tmp_path: Path) -> None:
    async def body(pool: pools.Pool, events: list[TaskEvent]) -> None:
        running = pool.submit(job("wait_for_file", str(tmp_path / "never")))
        await wait_for_path(tmp_path / "never.started")
        await pool.close(0)
        assert running.cancelled()

    with_pool("process", 1, body)
