"""Declaring tasks, calling them directly, their context, retries and backoff."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from client import Celeriac, Task
from client.context import Request, current_request, executing
from client.errors import InvalidTaskSpec, OutsideTaskError, Retry

app = Celeriac("unit", broker="127.0.0.1:1")


@app.task
def add(x: int, y: int) -> int:
    """Add two numbers."""
    return x + y


@app.task(bind=True, name="custom.name", max_retries=5)
def introspect(self: Task, value: int) -> tuple[str, int, int]:
    return self.request.name, self.request.retries, value


@app.task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


class RecordingReporter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def update_state(self, state: str, meta: object) -> None:
        self.calls.append(("state", state, meta))

    def heartbeat(self, progress: object, extend: float | None) -> None:
        self.calls.append(("heartbeat", progress, extend))


def test_names_default_to_module_and_function_and_tasks_are_registered() -> None:
    assert add.name == f"{__name__}.add"
    assert app.tasks[add.name] is add and app.tasks["custom.name"] is introspect
    assert add.__doc__ == "Add two numbers."


def test_calling_a_task_runs_it_here_with_a_direct_call_request() -> None:
    assert add(2, 3) == 5
    assert introspect(7) == ("custom.name", 0, 7)
    assert current_request() is None  # the direct call's context does not leak


def test_calling_an_async_task_returns_a_coroutine() -> None:
    assert asyncio.run(async_double(4)) == 8


def test_the_worker_context_is_visible_to_a_bound_task_and_restored_after() -> None:
    request = Request(id="t-1", name="custom.name", retries=2, queue="q", lease_id="l")
    reporter = RecordingReporter()
    with executing(request, reporter):
        assert introspect.run(introspect, 1) == ("custom.name", 2, 1)
        introspect.update_state("PROGRESS", {"done": 1})
        introspect.heartbeat(progress=0.5, extend=10)
    assert current_request() is None
    assert reporter.calls == [("state", "PROGRESS", {"done": 1}), ("heartbeat", 0.5, 10)]


def test_context_is_separate_per_asyncio_task() -> None:
    async def observe(task_id: str, gate: asyncio.Event) -> str:
        with executing(Request(id=task_id, name="n"), RecordingReporter()):
            await gate.wait()
            request = current_request()
            assert request is not None
            return request.id

    async def main() -> list[str]:
        gate = asyncio.Event()
        running = [asyncio.create_task(observe(i, gate)) for i in ("a", "b")]
        await asyncio.sleep(0)
        gate.set()
        return list(await asyncio.gather(*running))

    assert asyncio.run(main()) == ["a", "b"]


def test_update_state_and_request_outside_a_task_are_errors() -> None:
    with pytest.raises(OutsideTaskError, match="update_state"):
        add.update_state("PROGRESS")
    with pytest.raises(OutsideTaskError, match="request"):
        add.request  # noqa: B018


def test_retry_raises_retry_carrying_its_arguments_and_cause() -> None:
    cause = ConnectionError("down")
    with pytest.raises(Retry) as caught:
        introspect.retry(exc=cause, countdown=2.5, max_retries=9)
    retry = caught.value
    assert (retry.exc, retry.countdown, retry.max_retries) == (cause, 2.5, 9)
    assert retry.__cause__ is cause and "ConnectionError" in str(retry)


def test_retry_with_a_negative_countdown_is_refused() -> None:
    with pytest.raises(InvalidTaskSpec):
        introspect.retry(countdown=-1)


def make_task(**options: Any) -> Task:
    local = Celeriac("backoff", broker="127.0.0.1:1")
    return local.task(name="t", **options)(lambda: None)


def test_without_backoff_the_retry_delay_is_the_default() -> None:
    assert make_task().retry_delay_for(3) == 180
    assert make_task(default_retry_delay=2).retry_delay_for(0) == 2


def test_backoff_doubles_from_its_base_up_to_the_cap() -> None:
    task = make_task(retry_backoff=True, retry_jitter=False, retry_backoff_max=10)
    assert [task.retry_delay_for(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    based = make_task(retry_backoff=3, retry_jitter=False)
    assert [based.retry_delay_for(n) for n in range(3)] == [3, 6, 12]
    assert based.retry_delay_for(10_000) == 600  # forever-retrying tasks do not overflow


def test_jitter_draws_the_delay_from_zero_to_the_backoff() -> None:
    task = make_task(retry_backoff=True, retry_backoff_max=1000)
    rng = random.Random(7)
    delays = [task.retry_delay_for(5, rng=rng) for _ in range(200)]
    assert all(0 <= delay <= 32 for delay in delays)
    assert len(set(delays)) > 100  # actually random, not the fixed backoff
