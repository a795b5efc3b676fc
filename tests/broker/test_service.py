"""TaskService and WorkerService over a real channel, driven with the raw generated stubs."""

from __future__ import annotations

import grpc
import pytest

from broker.testing import RunningBroker, running_broker
from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2, worker_pb2
from tests.broker.conftest import FAST
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import json_args, spec, submit
from tests.support import wait_until

TIMEOUT = 5.0


def test_first_example_runs_end_to_end_through_a_fake_worker(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    worker = FakeWorker(broker.address)
    try:
        assert worker.welcome.session_id
        limits = (worker.welcome.max_payload_bytes, worker.welcome.max_message_bytes)
        assert limits == (FAST.max_payload_bytes, FAST.max_message_bytes)
        submitted = tasks.Submit(submit(), timeout=TIMEOUT)
        assert submitted.created
        assert submitted.state == tasks_pb2.TASK_STATE_PENDING
        worker.credit(1)
        (assignment,) = worker.assignments(1)
        assert assignment.task_id == submitted.task_id
        assert assignment.attempt == 1
        assert assignment.args == json_args(4, 4)
        worker.report(started_lease_ids=[assignment.lease_id])
        worker.succeed(assignment.lease_id, b"8")
        request = client_pb2.GetResultRequest(task_id=submitted.task_id, wait_ms=5000)
        result = tasks.GetResult(request, timeout=TIMEOUT).result
        assert result.state == tasks_pb2.TASK_STATE_SUCCESS
        assert result.result.body == b"8"
        assert result.worker_id == "fake@test:1"
        assert result.attempts == 1
    finally:
        worker.close()


def test_get_result_of_an_unknown_id_is_not_found(tasks: client_pb2_grpc.TaskServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        tasks.GetResult(client_pb2.GetResultRequest(task_id="nope"), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_results_reports_unknown_ids_as_unknown(
    tasks: client_pb2_grpc.TaskServiceStub,
) -> None:
    known = tasks.Submit(submit(), timeout=TIMEOUT).task_id
    request = client_pb2.GetResultsRequest(task_ids=[known, "nope"])
    results = tasks.GetResults(request, timeout=TIMEOUT).results
    states = [r.state for r in results]
    assert states == [tasks_pb2.TASK_STATE_PENDING, tasks_pb2.TASK_STATE_UNKNOWN]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"name": ""}, "name is required"),
        ({"priority": 10}, "priority must be 0..9"),
        ({"queue": "bad queue!"}, "queue name"),
        ({"args": tasks_pb2.Payload(content_type="text/yaml", body=b"x")}, "content type"),
        ({"task_id": "x" * 256}, "task_id"),
        ({"time_limit_ms": 10, "soft_time_limit_ms": 20}, "soft_time_limit_ms"),
    ],
)
def test_malformed_specs_are_invalid_argument_with_a_precise_message(
    tasks: client_pb2_grpc.TaskServiceStub, fields: dict[str, object], fragment: str
) -> None:
    fields = {"name": "tasks.add", **fields}
    request = client_pb2.SubmitRequest(task=spec(**fields))  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as raised:
        tasks.Submit(request, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in str(raised.value.details())


def test_oversize_payload_gets_our_message_and_a_huge_one_gets_grpcs(
    tasks: client_pb2_grpc.TaskServiceStub,
) -> None:
    big = tasks_pb2.Payload(content_type="application/json", body=b"1" * (1024 * 1024 + 1))
    with pytest.raises(grpc.RpcError) as raised:
        tasks.Submit(submit(args=big), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 1048576" in str(raised.value.details())
    huge = tasks_pb2.Payload(content_type="application/json", body=b"1" * (5 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as raised:
        tasks.Submit(submit(args=huge), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The broker keeps serving.
    assert tasks.Submit(submit(), timeout=TIMEOUT).created


def test_submit_many_is_all_or_nothing_and_names_the_bad_index(
    tasks: client_pb2_grpc.TaskServiceStub,
) -> None:
    batch = client_pb2.SubmitManyRequest(tasks=[spec(task_id="a"), spec(task_id="b", priority=12)])
    with pytest.raises(grpc.RpcError) as raised:
        tasks.SubmitMany(batch, timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(raised.value.details()).startswith("tasks[1]")
    with pytest.raises(grpc.RpcError):
        tasks.GetResult(client_pb2.GetResultRequest(task_id="a"), timeout=TIMEOUT)


def test_get_result_waits_without_polling_and_answers_not_ready_on_timeout(
    tasks: client_pb2_grpc.TaskServiceStub,
) -> None:
    task_id = tasks.Submit(submit(), timeout=TIMEOUT).task_id
    request = client_pb2.GetResultRequest(task_id=task_id, wait_ms=50)
    result = tasks.GetResult(request, timeout=TIMEOUT).result
    assert result.state == tasks_pb2.TASK_STATE_PENDING


def test_a_client_disconnecting_mid_wait_leaves_no_waiter(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    task_id = tasks.Submit(submit(), timeout=TIMEOUT).task_id
    request = client_pb2.GetResultRequest(task_id=task_id, wait_ms=30_000)
    future = tasks.GetResult.future(request, timeout=TIMEOUT)
    wait_until(lambda: broker.call(lambda core: core.lifecycle.results.waiter_count) == 1)
    future.cancel()  # type: ignore[no-untyped-call]
    wait_until(lambda: broker.call(lambda core: core.lifecycle.results.waiter_count) == 0)


def test_revoke_of_queued_unknown_and_finished_tasks(
    tasks: client_pb2_grpc.TaskServiceStub,
) -> None:
    queued = tasks.Submit(submit(), timeout=TIMEOUT).task_id
    request = client_pb2.RevokeRequest(task_ids=[queued, "nope", queued], reason="no longer needed")
    outcomes = tasks.Revoke(request, timeout=TIMEOUT).outcomes
    assert list(outcomes) == [
        client_pb2.REVOKE_OUTCOME_REVOKED,
        client_pb2.REVOKE_OUTCOME_UNKNOWN,
        client_pb2.REVOKE_OUTCOME_ALREADY_FINISHED,
    ]
    result = tasks.GetResult(client_pb2.GetResultRequest(task_id=queued), timeout=TIMEOUT).result
    assert result.state == tasks_pb2.TASK_STATE_REVOKED
    assert result.error.message == "no longer needed"


def test_revoke_of_a_running_task_pushes_a_cancel_and_rejects_its_late_result(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    worker = FakeWorker(broker.address)
    try:
        task_id = tasks.Submit(submit(), timeout=TIMEOUT).task_id
        worker.credit(1)
        (assignment,) = worker.assignments(1)
        revoke = client_pb2.RevokeRequest(task_ids=[task_id], terminate=True)
        outcomes = tasks.Revoke(revoke, timeout=TIMEOUT).outcomes
        assert list(outcomes) == [client_pb2.REVOKE_OUTCOME_CANCEL_SENT]
        cancel = worker.expect("cancel").cancel
        assert list(cancel.lease_ids) == [assignment.lease_id]
        assert cancel.terminate
        worker.succeed(assignment.lease_id)
        rejection = worker.expect("rejections").rejections.rejections[0]
        assert rejection.lease_id == assignment.lease_id
        result = tasks.GetResult(client_pb2.GetResultRequest(task_id=task_id), timeout=TIMEOUT)
        assert result.result.state == tasks_pb2.TASK_STATE_REVOKED
    finally:
        worker.close()


def test_a_malformed_stream_message_ends_only_that_stream(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    good = FakeWorker(broker.address, worker_id="good")
    bad = FakeWorker(broker.address, worker_id="bad")
    try:
        bad.send(worker_pb2.WorkerMessage())  # no kind set
        assert bad.end_status() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad.error is not None
        assert "no kind" in str(bad.error.details())
        tasks.Submit(submit(), timeout=TIMEOUT)
        good.credit(1)
        (assignment,) = good.assignments(1)
        assert assignment.attempt == 1
    finally:
        good.close()
        bad.close()


def test_a_session_must_start_with_hello(broker: RunningBroker) -> None:
    worker = FakeWorker(broker.address)
    try:
        worker.send(worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="again")))
        assert worker.end_status() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        worker.close()


def test_a_worker_that_vanishes_has_its_task_redelivered_to_another(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    first = FakeWorker(broker.address, worker_id="first")
    second = FakeWorker(broker.address, worker_id="second")
    try:
        task_id = tasks.Submit(submit(), timeout=TIMEOUT).task_id
        first.credit(1)
        first.assignments(1)
        first.close()
        second.credit(1)
        (again,) = second.assignments(1)
        assert again.task_id == task_id
        assert again.attempt == 2
        second.succeed(again.lease_id)
        request = client_pb2.GetResultRequest(task_id=task_id, wait_ms=5000)
        assert tasks.GetResult(request, timeout=TIMEOUT).result.state == (
            tasks_pb2.TASK_STATE_SUCCESS
        )
    finally:
        second.close()


def test_server_info_describes_the_broker(tasks: client_pb2_grpc.TaskServiceStub) -> None:
    info = tasks.ServerInfo(client_pb2.ServerInfoRequest(), timeout=TIMEOUT)
    assert info.version == "0.1.0"
    assert info.protocol == "celeriac.v1"
    assert "dead-letters" in info.features
    assert info.max_payload_bytes == 1024 * 1024


def test_a_worker_that_stops_answering_pings_is_dropped_and_its_task_requeued() -> None:
    config = FAST.replace(ping_interval=0.05, ping_timeout=0.3, lease_grace=0.05)
    with running_broker(config) as running, grpc.insecure_channel(running.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        silent = FakeWorker(running.address, worker_id="silent", channel=channel)
        tasks.Submit(submit(), timeout=TIMEOUT)
        silent.credit(1)
        # The fake worker's reader thread queues pings without answering them.
        assert silent.end_status() == grpc.StatusCode.UNAVAILABLE
        healthy = FakeWorker(running.address, worker_id="healthy", channel=channel)
        healthy.credit(1)
        (again,) = healthy.assignments(1)
        assert again.attempt == 2
        silent.close()
        healthy.close()


def test_a_second_session_with_a_live_worker_id_fences_the_first(broker: RunningBroker) -> None:
    first = FakeWorker(broker.address, worker_id="twin")
    second = FakeWorker(broker.address, worker_id="twin")
    try:
        assert first.end_status() is grpc.StatusCode.FAILED_PRECONDITION
        assert first.error is not None and "fenced" in str(first.error.details())
        second.credit(1)  # the newer session carries on
        open_sessions = broker.call(
            lambda core: [s.session_id for s in core.workers.sessions.values() if not s.closed]
        )
        assert open_sessions == [second.welcome.session_id]
    finally:
        first.close()
        second.close()
