"""Limits enforced where the calls arrive, each at its edge: sessions and held calls per peer and
per stream, held bytes, queues and names over a real channel."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from broker.config import BrokerConfig
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import client_pb2, client_pb2_grpc
from tests.broker.conftest import FAST
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import submit
from tests.broker.test_client_session import RawSession
from tests.broker.test_error_details import error_info
from tests.support import run_python, wait_until

TIMEOUT = 5.0
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


@pytest.fixture
def limited() -> Iterator[RunningBroker]:
    config = FAST.replace(
        max_sessions_per_peer=3,
        max_held_calls_per_stream=2,
        max_held_calls_per_peer=3,
        max_held_bytes=10_000,
        max_queues=2,
    )
    with running_broker(config) as running:
        yield running


def held_waiters(broker: RunningBroker) -> int:
    return broker.call(lambda core: core.lifecycle.results.waiter_count)


def test_sessions_per_peer_count_worker_and_client_streams_alike(limited: RunningBroker) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        workers = [FakeWorker(limited.address, worker_id=f"w{i}") for i in range(2)]
        client = RawSession(channel)
        client.send(1, submit=submit())
        assert client.next().submit.created  # the third session is served
        with pytest.raises(AssertionError, match="RESOURCE_EXHAUSTED"):
            FakeWorker(limited.address, worker_id="w3")
        refused = RawSession(channel)
        refused.send(1, submit=submit())
        ending = refused.replies.get(timeout=TIMEOUT)
        assert isinstance(ending, grpc.RpcError) and isinstance(ending, grpc.Call)
        assert ending.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(ending)
        assert info.reason == "SESSIONS_EXCEEDED"
        assert dict(info.metadata)["max"] == "3"
        # A session that ends gives its slot back.
        workers.pop().close()
        wait_until(lambda: limited.stream_count() == 1)
        workers.append(FakeWorker(limited.address, worker_id="w4"))
        for worker in workers:
            worker.close()
        client.close()


def test_held_calls_are_capped_per_stream_and_per_peer(limited: RunningBroker) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        task_id = tasks.Submit(submit(queue="q"), timeout=TIMEOUT).task_id
        wait = client_pb2.GetResultRequest(task_id=task_id, wait_ms=20_000)
        session = RawSession(channel)
        session.send(1, get_result=wait)
        session.send(2, get_result=wait)
        session.send(3, get_result=wait)
        refused = session.next()
        assert refused.call_id == 3
        assert refused.error.code == RESOURCE_EXHAUSTED
        assert refused.error.reason == "HELD_CALLS_EXCEEDED"
        assert refused.error.metadata["limit"] == "max_held_calls_per_stream"

        # The peer's third held call is a unary one; its fourth is refused, whichever path.
        answers: list[client_pb2.GetResultResponse] = []
        thread = threading.Thread(
            target=lambda: answers.append(tasks.GetResult(wait, timeout=TIMEOUT * 4))
        )
        thread.start()
        wait_until(lambda: held_waiters(limited) == 3)
        with pytest.raises(grpc.RpcError) as raised:
            tasks.GetResult(wait, timeout=TIMEOUT)
        info = error_info(raised.value)
        assert (info.reason, info.metadata["limit"]) == (
            "HELD_CALLS_EXCEEDED",
            "max_held_calls_per_peer",
        )
        other = RawSession(channel)
        other.send(1, get_result=wait)
        assert other.next().error.reason == "HELD_CALLS_EXCEEDED"
        # Calls that answer at once are never held, so they are never refused.
        other.send(2, get_result=client_pb2.GetResultRequest(task_id=task_id))
        assert other.next().get_result.result.task_id == task_id

        # The result lands: every held call is answered and gives its slot back.
        worker = FakeWorker(limited.address, queues=("q",))
        worker.credit(1)
        (assignment,) = worker.assignments(1)
        worker.succeed(assignment.lease_id, b"42")
        assert {session.next().call_id, session.next().call_id} == {1, 2}
        thread.join(TIMEOUT)
        assert answers[0].result.result.body == b"42"
        assert held_waiters(limited) == 0
        session.send(4, get_result=wait)
        assert session.next().get_result.result.result.body == b"42"
        for stream in (session, other):
            stream.close()
        worker.close()


def test_held_bytes_queues_and_names_refuse_over_the_wire(limited: RunningBroker) -> None:
    with grpc.insecure_channel(limited.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        big = {"content_type": "application/json", "body": b"1" * 6_000}
        tasks.Submit(submit(args=big), timeout=TIMEOUT)
        cases = [
            (submit(args=big), grpc.StatusCode.RESOURCE_EXHAUSTED, "HELD_BYTES_EXCEEDED"),
            (submit(queue="q2"), None, ""),
            (submit(queue="q3"), grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUES_EXCEEDED"),
            (submit("tasks.\u202eadd"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME"),
        ]
        for request, code, reason in cases:
            if code is None:
                tasks.Submit(request, timeout=TIMEOUT)
                continue
            with pytest.raises(grpc.RpcError) as raised:
                tasks.Submit(request, timeout=TIMEOUT)
            assert isinstance(raised.value, grpc.Call)
            assert raised.value.code() == code
            assert error_info(raised.value).reason == reason
        info = tasks.ServerInfo(client_pb2.ServerInfoRequest(), timeout=TIMEOUT)
        assert dict(info.refused) == {
            "HELD_BYTES_EXCEEDED": 1,
            "QUEUES_EXCEEDED": 1,
            "INVALID_NAME": 1,
        }


def test_the_environment_and_the_serve_flags_set_the_limits() -> None:
    environ = {"CELERIAC_BROKER_MAX_HELD_BYTES": "123", "CELERIAC_BROKER_MAX_QUEUES": "7"}
    config = BrokerConfig.from_env(environ)
    assert (config.max_held_bytes, config.max_queues) == (123, 7)
    refused = run_python("-m", "broker", "serve", "--port", "0", "--max-sessions-per-peer", "0")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: --max-sessions-per-peer 0 must be at least 1"
