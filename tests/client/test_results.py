"""Results produced through a real broker: values, rebuilt errors, groups, and asyncio waits.

A stub worker (``stub_worker.py``) answers tasks so these tests need only the broker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from broker.testing import RunningBroker, running_broker
from client import Celeriac, group
from client.errors import TimeoutError
from client.result import GroupResult
from tests.client.stub_worker import StubWorker


class Oops(Exception):
    """A task's own exception type, defined in a module the client has imported (this one)."""


def handle(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if name == "tasks.divide":
        return args[0] / args[1]
    if name == "tasks.oops":
        raise Oops("custom failure")
    return sum(args)


app = Celeriac("tasks", broker="127.0.0.1:1")


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tasks.divide")
def divide(x: float, y: float) -> float:
    return x / y


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    with running_broker() as running, StubWorker(running.address, handle):
        yield running


@pytest.fixture(autouse=True)
def connected(broker: RunningBroker) -> Iterator[None]:
    app.conf = Celeriac(broker=broker.address, connect_timeout=5).conf
    yield
    app.close()


def test_get_returns_the_value_and_the_result_reads_like_celery() -> None:
    result = add.delay(4, 4)
    assert result.get(timeout=10) == 8
    assert result.state == "SUCCESS" and result.ready() and result.successful()
    assert result.result == 8 and result.date_done is not None


def test_a_builtin_error_is_re_raised_as_itself_with_the_remote_traceback() -> None:
    result = divide.delay(1, 0)
    with pytest.raises(ZeroDivisionError, match="division by zero") as caught:
        result.get(timeout=10)
    assert any("Remote traceback" in note for note in caught.value.__notes__)
    assert result.failed() and result.state == "FAILURE"
    assert "ZeroDivisionError" in (result.traceback or "")
    assert isinstance(result.get(timeout=1, propagate=False), ZeroDivisionError)
    assert isinstance(result.result, ZeroDivisionError)


def test_an_error_type_the_client_has_imported_comes_back_as_itself() -> None:
    result = app.send_task("tasks.oops")
    with pytest.raises(Oops, match="custom failure") as caught:
        result.get(timeout=10)
    assert any("custom failure" in note for note in caught.value.__notes__)


def test_a_group_returns_values_in_order_and_raises_the_first_failure() -> None:
    assert group(add.s(i, i) for i in range(30)).apply_async().get(timeout=10) == [
        2 * i for i in range(30)
    ]
    mixed = group(add.s(1, 1), divide.s(1, 0), add.s(2, 2)).apply_async()
    with pytest.raises(ZeroDivisionError):
        mixed.get(timeout=10)
    values = mixed.get(timeout=10, propagate=False)
    assert values[0] == 2 and isinstance(values[1], ZeroDivisionError) and values[2] == 4
    assert mixed.ready() and mixed.completed_count() == 2 and mixed.failed()


def test_a_group_read_in_several_chunks_waits_for_its_slowest_task(
    broker: RunningBroker,
) -> None:
    app.conf = Celeriac(broker=broker.address, connect_timeout=5, group_chunk_size=4).conf
    slow = add.apply_async((100, 1), queue="released-mid-wait")
    fast = [add.delay(i, i) for i in range(10)]
    # The slow task first and last, and one task twice: each chunk asks for an id once.
    together = GroupResult(None, [slow, *fast, fast[0], slow])
    collected = threading.Event()

    def release_the_slow_queue() -> None:
        time.sleep(0.3)  # get() is waiting on the first chunk by now
        with StubWorker(broker.address, handle, queue_name="released-mid-wait"):
            collected.wait(10)

    releaser = threading.Thread(target=release_the_slow_queue)
    releaser.start()
    try:
        values = together.get(timeout=10)
    finally:
        collected.set()
        releaser.join()
    assert values == [101, *(2 * i for i in range(10)), 0, 101]
    assert together.ready() and together.completed_count() == 13


def test_awaiting_a_result_lets_other_coroutines_run() -> None:
    async def main() -> None:
        waiting = await add.aapply_async((1, 2), queue="released-later")
        waiter = asyncio.create_task(waiting.aget(timeout=20))
        # If aget blocked the loop, none of this could run until it timed out.
        assert await waiting.astate() == "PENDING"
        other = await add.adelay(20, 22)
        assert await other.aget(timeout=10) == 42
        assert not waiter.done()
        with StubWorker(app.conf.target, handle, queue_name="released-later"):
            assert await waiter == 3
        await app.aclose()

    asyncio.run(main())


def test_the_asyncio_group_flavour() -> None:
    async def main() -> list[Any]:
        result = await group(add.s(i, 1) for i in range(5)).aapply_async()
        values = await result.aget(timeout=10)
        await app.aclose()
        return values

    assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_aget_times_out_like_get() -> None:
    async def main() -> None:
        waiting = await add.aapply_async((1, 2), queue="never-released")
        with pytest.raises(TimeoutError):
            await waiting.aget(timeout=0.1)
        await app.aclose()

    asyncio.run(main())


def test_each_event_loop_gets_its_own_channel() -> None:
    async def roundtrip() -> int:
        return int(await (await add.adelay(1, 1)).aget(timeout=10))

    assert asyncio.run(roundtrip()) == 2
    assert asyncio.run(roundtrip()) == 2  # a second loop must not reuse the first loop's channel


def test_one_app_serves_many_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        values = list(pool.map(lambda i: add.delay(i, i).get(timeout=10), range(40)))
    assert values == [2 * i for i in range(40)]


def test_a_signature_by_name_groups_tasks_this_process_cannot_import() -> None:
    by_name = group(app.signature("tasks.add", (i, 1), queue="default") for i in range(3))
    assert by_name.apply_async().get(timeout=10) == [1, 2, 3]
