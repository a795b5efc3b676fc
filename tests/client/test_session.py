"""delay() and get() on the session stream: pushed results, fallbacks, and a stream that breaks.

A real in-process broker and the stub worker; the assertions look at the transport's stream
only to prove which path a call took.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from broker.config import BrokerConfig
from broker.testing import RunningBroker, running_broker
from client import Celeriac, Signature, group
from client.call_stream import CallStream, ResultWatch
from client.errors import BrokerUnavailable, PayloadTooLarge
from tests.client.stub_worker import StubWorker
from tests.support import ROOT

# Tasks in this queue wait until a test releases them with a StubWorker of its own.
HELD = "held-back"


def handle(name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if name == "tasks.blob":
        return "x" * args[0]
    return sum(args)


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    limits = BrokerConfig(max_payload_bytes=20_000, max_message_bytes=64_000)
    with running_broker(limits) as running, StubWorker(running.address, handle):
        yield running


@pytest.fixture
def app(broker: RunningBroker) -> Iterator[Celeriac]:
    with Celeriac("session-tests", broker=broker.address, connect_timeout=5) as client_app:
        yield client_app


def stream_of(app: Celeriac) -> CallStream:
    stream = app.transport._stream
    assert stream is not None, "the call did not go over the session stream"
    return stream


def test_the_result_is_pushed_and_get_reads_it_without_a_call(
    app: Celeriac, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = app.send_task("tasks.add", args=(2, 3))
    watch = result._watch
    assert isinstance(watch, ResultWatch)
    assert watch.wait(10)  # pushed by the broker; nobody asked for it yet
    assert watch.result is not None

    def no_more_calls(*args: object) -> None:
        raise AssertionError("get() made a call although the result was pushed")

    monkeypatch.setattr(app.transport, "_session_for", no_more_calls)
    monkeypatch.setattr(app.transport, "_invoke", no_more_calls)
    assert result.get(timeout=5) == 5
    assert result.state == "SUCCESS"


def test_a_result_nobody_can_read_is_not_kept(app: Celeriac, broker: RunningBroker) -> None:
    result = app.send_task("tasks.add", args=(1, 1), queue=HELD)
    task_id = result.id
    stream = stream_of(app)
    assert task_id in stream._watches
    del result
    gc.collect()
    assert task_id not in stream._watches
    with StubWorker(broker.address, handle, queue_name=HELD):
        # The push still comes, finds no watch and is dropped; the result stays readable.
        assert app.AsyncResult(task_id).get(timeout=10) == 2


def test_ignored_and_scheduled_results_are_not_watched(app: Celeriac) -> None:
    assert app.send_task("tasks.add", args=(1, 1), ignore_result=True)._watch is None
    assert app.send_task("tasks.add", args=(1, 1), countdown=60, queue=HELD)._watch is None
    assert app.send_task("tasks.add", args=(1, 1), idempotency_key="k1")._watch is None


def test_a_payload_over_the_broker_limit_fails_alone_on_the_session(app: Celeriac) -> None:
    app.send_task("tasks.add", args=(1, 1), queue=HELD)
    stream = stream_of(app)
    with pytest.raises(PayloadTooLarge, match="bytes") as raised:
        app.send_task("tasks.add", args=("x" * 30_000,), queue=HELD)
    # The session's CallError carries the same typed reason and facts as a unary refusal.
    assert raised.value.reason == "PAYLOAD_TOO_LARGE"
    assert raised.value.metadata["limit"] == "max_payload_bytes"
    assert raised.value.metadata["max"] == "20000"
    assert app.send_task("tasks.add", args=(4, 4)).get(timeout=10) == 8
    assert stream_of(app) is stream and not stream.broken


def test_a_message_over_the_grpc_limit_goes_as_a_unary_call(app: Celeriac) -> None:
    app.send_task("tasks.add", args=(1, 1), queue=HELD)
    stream = stream_of(app)
    # Over max_message_bytes: on the stream it would end the stream and every call on it.
    with pytest.raises(PayloadTooLarge):
        app.send_task("tasks.add", args=("x" * 100_000,), queue=HELD)
    assert stream_of(app) is stream and not stream.broken
    assert app.send_task("tasks.add", args=(2, 2)).get(timeout=10) == 4


def test_a_get_waiting_when_the_broker_stops_fails_as_broker_unavailable() -> None:
    with running_broker() as broker:
        app = Celeriac("stopping", broker=broker.address, connect_timeout=1)
        result = app.send_task("tasks.add", args=(1, 1), queue=HELD)
        raised: list[BaseException] = []

        def wait() -> None:
            try:
                result.get(timeout=30)
            except BaseException as error:  # handed to the test thread
                raised.append(error)

        waiter = threading.Thread(target=wait)
        waiter.start()
        broker.stop()
        waiter.join(20)
        assert not waiter.is_alive()
        assert len(raised) == 1 and isinstance(raised[0], BrokerUnavailable)
        app.close()


def test_asyncio_calls_ride_their_loop_s_session_and_read_pushed_results(app: Celeriac) -> None:
    async def main() -> int:
        result = await app.asend_task("tasks.add", args=(20, 22))
        assert result._watch is not None
        value = int(await result.aget(timeout=10))
        await app.aclose()
        return value

    assert asyncio.run(main()) == 42


# A process that calls, forks, and calls again from both sides (run in a fresh interpreter: the
# test process has brokers and workers running in threads, which must not be forked).
FORKING_CLIENT = """
import os, sys
from client import Celeriac
app = Celeriac("fork", broker=sys.argv[1])
assert app.send_task("tasks.add", args=(1, 1)).get(timeout=10) == 2
pid = os.fork()
if pid == 0:
    os._exit(0 if app.send_task("tasks.add", args=(2, 3)).get(timeout=10) == 5 else 3)
_, status = os.waitpid(pid, 0)
assert app.send_task("tasks.add", args=(4, 4)).get(timeout=10) == 8
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_process_opens_its_own_channel_and_stream(broker: RunningBroker) -> None:
    # gRPC itself survives a fork only with its fork support on, which the README tells
    # prefork users to enable; without our part, the child would wait on its parent's stream.
    env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FORKING_CLIENT, broker.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_group_results_larger_than_one_message_arrive_in_several(app: Celeriac) -> None:
    # Ten results of 15 kB against a 64 kB message limit: the broker answers in parts.
    result = group(Signature(app, "tasks.blob", (15_000,)) for _ in range(10)).apply_async()
    values = result.get(timeout=10)
    assert values == ["x" * 15_000] * 10


def test_asyncio_group_results_larger_than_one_message_arrive_in_several(app: Celeriac) -> None:
    async def main() -> list[Any]:
        signatures = (Signature(app, "tasks.blob", (15_000,)) for _ in range(10))
        result = await group(signatures).aapply_async()
        values = await result.aget(timeout=10)
        await app.aclose()
        return values

    assert asyncio.run(main()) == ["x" * 15_000] * 10


def test_a_result_watch_wakes_every_waiter_and_stays_open_after_delivery() -> None:
    watch = ResultWatch("task-1")
    assert not watch.wait(0.01)  # nothing delivered yet
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(watch.wait(10))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    watch.deliver(None)
    for waiter in waiters:
        waiter.join(10)
    assert woke == [True, True, True]
    assert watch.wait(0) and watch.wait(0)  # later waits return at once
    watch.deliver(None)  # a second delivery (the stream ending afterwards) is harmless
