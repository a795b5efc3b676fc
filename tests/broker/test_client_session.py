"""TaskService.Session over a real channel, driven with the raw generated stubs."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest

from broker.config import BrokerConfig
from broker.service import client_session
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import spec, submit
from tests.support import wait_until

WAIT = 5.0
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]


class RawSession:
    """One Session stream: send calls, read replies in the order they come."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._outgoing: queue.Queue[client_pb2.SessionCall | None] = queue.Queue()
        self.replies: queue.Queue[client_pb2.SessionReply | grpc.RpcError | None] = queue.Queue()
        self.call = client_pb2_grpc.TaskServiceStub(channel).Session(self._requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _requests(self) -> Iterator[client_pb2.SessionCall]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for reply in self.call:
                self.replies.put(reply)
            self.replies.put(None)
        except grpc.RpcError as error:
            self.replies.put(error)

    def send(self, call_id: int, **fields: object) -> None:
        self._outgoing.put(client_pb2.SessionCall(call_id=call_id, **fields))  # type: ignore[arg-type]

    def next(self) -> client_pb2.SessionReply:
        reply = self.replies.get(timeout=WAIT)
        assert isinstance(reply, client_pb2.SessionReply), f"stream ended: {reply!r}"
        return reply

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.replies.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self._outgoing.put(None)


@pytest.fixture
def session(channel: grpc.Channel) -> Iterator[RawSession]:
    raw = RawSession(channel)
    yield raw
    raw.close()


@pytest.fixture
def worker(broker: RunningBroker) -> Iterator[FakeWorker]:
    fake = FakeWorker(broker.address)
    yield fake
    fake.close()


def _run_one(worker: FakeWorker, body: bytes = b"8") -> str:
    worker.credit(1)
    (assignment,) = worker.assignments(1)
    worker.report(started_lease_ids=[assignment.lease_id])
    worker.succeed(assignment.lease_id, body)
    return assignment.task_id


def test_a_held_get_result_does_not_hold_up_later_calls(
    session: RawSession, worker: FakeWorker
) -> None:
    session.send(1, submit=submit())
    first = session.next()
    assert first.call_id == 1
    assert first.submit.created
    task_id = first.submit.task_id
    held = client_pb2.GetResultRequest(task_id=task_id, wait_ms=5000)
    session.send(2, get_result=held)
    session.send(3, submit=submit())
    assert session.next().call_id == 3  # answered while call 2 is still held
    assert _run_one(worker) == task_id
    answer = session.next()
    assert answer.call_id == 2
    assert answer.get_result.result.state == tasks_pb2.TASK_STATE_SUCCESS
    assert answer.get_result.result.result.body == b"8"


def test_a_failed_call_gets_its_status_and_the_stream_carries_on(session: RawSession) -> None:
    session.send(1, submit=submit(priority=10))
    session.send(2, get_result=client_pb2.GetResultRequest(task_id="nope"))
    session.send(3)  # no call set
    session.send(4, submit=submit())
    replies = {reply.call_id: reply for reply in (session.next() for _ in range(4))}
    assert replies[1].error.code == INVALID_ARGUMENT
    assert "priority must be 0..9" in replies[1].error.message
    assert replies[2].error.code == NOT_FOUND
    assert replies[3].error.code == INVALID_ARGUMENT
    assert replies[4].submit.created


def test_a_watched_task_has_its_result_pushed_when_it_finishes(
    session: RawSession, worker: FakeWorker
) -> None:
    session.send(1, submit=submit(), watch=True)
    ack = session.next()
    assert ack.watching
    assert session.nothing_within(0.2)  # nothing is pushed before the task finishes
    _run_one(worker, b"16")
    push = session.next()
    assert push.call_id == 0
    (result,) = push.ready.results
    assert result.task_id == ack.submit.task_id
    assert result.state == tasks_pb2.TASK_STATE_SUCCESS
    assert result.result.body == b"16"


def test_watching_a_task_that_already_finished_pushes_it_at_once(
    session: RawSession, worker: FakeWorker
) -> None:
    session.send(1, submit=submit(task_id="t-done"))
    session.next()
    _run_one(worker)
    wait_until(lambda: _state(session, "t-done") == tasks_pb2.TASK_STATE_SUCCESS)
    session.send(9, submit=client_pb2.SubmitRequest(task=spec(task_id="t-done")), watch=True)
    ack, push = session.next(), session.next()
    assert not ack.submit.created
    assert ack.watching
    assert [r.task_id for r in push.ready.results] == ["t-done"]


def test_watches_past_the_limit_are_refused_not_failed(
    session: RawSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_session, "MAX_WATCHES", 2)
    for call_id in (1, 2, 3):
        session.send(call_id, submit=submit(), watch=True)
    answers = [session.next() for _ in range(3)]
    assert [a.watching for a in answers] == [True, True, False]
    assert all(a.submit.created for a in answers)


def test_a_client_that_goes_away_leaves_no_waiters_behind(
    broker: RunningBroker, channel: grpc.Channel
) -> None:
    raw = RawSession(channel)
    raw.send(1, submit=submit(), watch=True)
    task_id = raw.next().submit.task_id
    raw.send(2, get_result=client_pb2.GetResultRequest(task_id=task_id, wait_ms=30_000))
    wait_until(lambda: broker.call(lambda core: core.lifecycle.results.waiter_count) == 2)
    raw.call.cancel()  # type: ignore[no-untyped-call]
    wait_until(lambda: broker.call(lambda core: core.lifecycle.results.waiter_count) == 0)


def _state(session: RawSession, task_id: str) -> int:
    session.send(99, get_result=client_pb2.GetResultRequest(task_id=task_id))
    return session.next().get_result.result.state


def test_get_results_too_large_for_one_answer_says_how_many_it_left_out() -> None:
    limits = BrokerConfig(max_payload_bytes=20_000, max_message_bytes=64_000)
    with running_broker(limits) as broker, grpc.insecure_channel(broker.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        worker = FakeWorker(broker.address)
        try:
            ids = [tasks.Submit(submit(), timeout=WAIT).task_id for _ in range(10)]
            for _ in ids:
                _run_one(worker, b'"' + b"x" * 15_000 + b'"')
            request = client_pb2.GetResultsRequest(task_ids=ids, wait_ms=5000)
            first = tasks.GetResults(request, timeout=WAIT)
            answered = len(first.results)
            assert 0 < answered < 10 and first.omitted == 10 - answered
            assert [r.task_id for r in first.results] == ids[:answered]
            rest = tasks.GetResults(
                client_pb2.GetResultsRequest(task_ids=ids[answered:]), timeout=WAIT
            )
            assert all(r.state == tasks_pb2.TASK_STATE_SUCCESS for r in rest.results)
        finally:
            worker.close()
