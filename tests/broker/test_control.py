"""The broker's side of inspect/control: request checks, reply gathering, the message limit."""

from __future__ import annotations

import asyncio

import pytest

from broker.core.model import Hello
from broker.core.sessions import Session
from broker.errors import InvalidArgument, InvalidName, MessageTooLarge
from broker.service import control
from celeriac.v1 import admin_pb2, tasks_pb2, worker_pb2


def session(worker_id: str) -> Session:
    return Session(f"s-{worker_id}", Hello(worker_id), 0.0, 0.0)


def test_checked_applies_defaults_and_refuses_bad_requests() -> None:
    call = control.checked(admin_pb2.ControlWorkersRequest(command=worker_pb2.CONTROL_COMMAND_PING))
    assert (call.timeout, call.count, call.limit) == (1.0, 1, 1000)
    with pytest.raises(InvalidArgument, match="unknown control command 0"):
        control.checked(admin_pb2.ControlWorkersRequest())
    with pytest.raises(InvalidArgument, match="unknown control command 99"):
        control.checked(admin_pb2.ControlWorkersRequest(command=99))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timeout_ms 60001"):
        control.checked(
            admin_pb2.ControlWorkersRequest(
                command=worker_pb2.CONTROL_COMMAND_PING, timeout_ms=60_001
            )
        )
    with pytest.raises(InvalidName):
        control.checked(
            admin_pb2.ControlWorkersRequest(
                command=worker_pb2.CONTROL_COMMAND_PING, destination=["bad\nname"]
            )
        )


def test_replies_are_gathered_until_all_answer_and_late_or_unasked_ones_are_dropped() -> None:
    requests = control.ControlRequests()
    sent: list[tuple[str, worker_pb2.BrokerMessage]] = []

    def send(session_id: str, message: worker_pb2.BrokerMessage) -> bool:
        sent.append((session_id, message))
        return session_id != "s-gone"  # this one's stream just ended

    async def scenario() -> tuple[list[admin_pb2.WorkerAnswer], list[str]]:
        ping = worker_pb2.WorkerControl(command=worker_pb2.CONTROL_COMMAND_PING)
        asking = asyncio.ensure_future(
            requests.ask([session("a"), session("b"), session("gone")], ping, send, 30.0)
        )
        await asyncio.sleep(0)
        request_id = sent[0][1].control.request_id
        requests.deliver("s-zzz", worker_pb2.WorkerControlReply(request_id=request_id))
        requests.deliver("s-b", worker_pb2.WorkerControlReply(request_id=request_id, message="b"))
        requests.deliver("s-b", worker_pb2.WorkerControlReply(request_id=request_id, message="b2"))
        requests.deliver("s-a", worker_pb2.WorkerControlReply(request_id="ctl-other"))
        requests.deliver("s-a", worker_pb2.WorkerControlReply(request_id=request_id, message="a"))
        return await asyncio.wait_for(asking, 5)

    answers, missing = asyncio.run(scenario())
    assert [(a.worker_id, a.reply.message) for a in answers] == [("b", "b"), ("a", "a")]
    assert missing == ["gone"]
    assert len(requests) == 0


def test_silent_workers_are_reported_after_the_timeout() -> None:
    requests = control.ControlRequests()
    ping = worker_pb2.WorkerControl(command=worker_pb2.CONTROL_COMMAND_PING)
    answers, missing = asyncio.run(requests.ask([session("quiet")], ping, lambda *_: True, 0.05))
    assert (answers, missing) == ([], ["quiet"])


def test_a_large_answer_loses_task_arguments_first_then_is_refused() -> None:
    def summary(size: int) -> worker_pb2.TaskSummary:
        return worker_pb2.TaskSummary(
            task_id="t", args=tasks_pb2.Payload(content_type="application/json", body=b"x" * size)
        )

    reply = worker_pb2.WorkerControlReply(tasks=[summary(5000), summary(10)])
    response = admin_pb2.ControlWorkersResponse(
        answers=[admin_pb2.WorkerAnswer(worker_id="w", reply=reply)]
    )
    small = control.fitted(response, 1000)
    assert [t.args_omitted for t in small.answers[0].reply.tasks] == [True, True]
    assert not small.answers[0].reply.tasks[0].HasField("args")
    with pytest.raises(MessageTooLarge, match="ask fewer workers"):
        control.fitted(small, 10)
