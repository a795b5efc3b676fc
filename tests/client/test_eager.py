"""Eager execution (``apply()``, ``task_always_eager``): tasks run in the caller, no broker.

The apps here point at a closed port, so any attempt to reach a broker would fail the test.
"""

from __future__ import annotations

import asyncio

import pytest

from client import Celeriac, Task
from client.eager import EagerResult
from client.errors import InvalidTaskSpec

app = Celeriac("eager", broker="127.0.0.1:1")
attempts: list[int] = []


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def divide(x: float, y: float) -> float:
    return x / y


@app.task(bind=True, max_retries=2)
def flaky(self: Task, succeed_on: int) -> str:
    attempts.append(self.request.retries)
    if self.request.retries < succeed_on:
        raise self.retry(exc=ConnectionError("not yet"))
    return f"ok after {self.request.retries} retries, eager={self.request.is_eager}"


@app.task(autoretry_for=(KeyError,), retry_kwargs={"max_retries": 1})
def always_missing() -> None:
    attempts.append(0)
    raise KeyError("gone")


class Audited(Task):
    seen: list[str] = []

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(f"failure {task_id} {exc!r}")

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(f"after {status}")


@app.task(base=Audited)
def audited(x: int) -> int:
    return 10 // x


@app.task
async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_apply_runs_the_task_here_and_returns_a_finished_result() -> None:
    result = add.apply((2, 3), task_id="fixed")
    assert isinstance(result, EagerResult)
    assert (result.id, result.state, result.get(), result.result) == ("fixed", "SUCCESS", 5, 5)
    assert result.ready() and result.successful() and not result.failed()
    assert async_double.apply((4,)).get() == 8


def test_a_failure_is_kept_with_its_traceback_and_raised_by_get() -> None:
    result = divide.apply((1, 0))
    assert result.state == "FAILURE" and result.failed()
    assert isinstance(result.result, ZeroDivisionError)
    assert result.traceback is not None and "return x / y" in result.traceback
    with pytest.raises(ZeroDivisionError):
        result.get()
    assert isinstance(result.get(propagate=False), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        divide.apply((1, 0), throw=True)


def test_retries_run_again_at_once_up_to_the_limit() -> None:
    attempts.clear()
    result = flaky.apply((2,))
    assert result.get() == "ok after 2 retries, eager=True" and result.retries == 2
    assert attempts == [0, 1, 2]
    attempts.clear()
    exhausted = flaky.apply((5,))
    assert attempts == [0, 1, 2]
    with pytest.raises(ConnectionError, match="not yet"):
        exhausted.get()
    attempts.clear()
    assert always_missing.apply().failed() and attempts == [0, 0]  # retry_kwargs: 1 retry


def test_hooks_run_in_eager_mode_too() -> None:
    Audited.seen.clear()
    audited.apply((0,), task_id="t0")
    audited.apply((5,))
    assert Audited.seen == [
        "failure t0 ZeroDivisionError('integer division or modulo by zero')",
        "after FAILURE",
        "after SUCCESS",
    ]


def test_always_eager_makes_delay_run_here_and_still_checks_the_options() -> None:
    eager = Celeriac("always", broker="127.0.0.1:1", task_always_eager=True)

    @eager.task
    def mul(x: int, y: int) -> int:
        return x * y

    result = mul.delay(6, 7)
    assert isinstance(result, EagerResult) and result.get() == 42
    assert mul.apply_async((2, 2), task_id="given").id == "given"
    assert asyncio.run(mul.adelay(3, 3)).get() == 9
    with pytest.raises(InvalidTaskSpec, match="countdown"):
        mul.apply_async((1, 1), countdown=-1)


def test_eager_propagates_raises_at_once() -> None:
    strict = Celeriac("strict", broker="127.0.0.1:1", task_always_eager=True,
                      task_eager_propagates=True)  # fmt: skip

    @strict.task
    def boom() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        boom.delay()
