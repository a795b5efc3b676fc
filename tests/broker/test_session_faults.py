"""Session streams under faults: large batches, silent peers, slow readers, bad reports."""

from __future__ import annotations

import queue

import grpc
import pytest

from broker.testing import RunningBroker, running_broker
from celeriac.v1 import client_pb2_grpc, tasks_pb2, worker_pb2, worker_pb2_grpc
from tests.broker.conftest import FAST
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import submit
from tests.support import wait_until

TIMEOUT = 5.0
NEAR_LIMIT = 1024 * 1024 - 16  # just under the default max_payload_bytes


def test_assignments_larger_than_one_message_arrive_in_several(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    # Six near-limit arguments exceed gRPC's 4 MiB message limit when sent as one batch.
    args = _near_limit_args()
    body = args.body
    ids = {tasks.Submit(submit(args=args), timeout=TIMEOUT).task_id for _ in range(6)}
    worker = FakeWorker(broker.address)
    try:
        worker.credit(6)
        assignments = worker.assignments(6)
        assert {a.task_id for a in assignments} == ids
        assert all(a.attempt == 1 and a.args.body == body for a in assignments)
    finally:
        worker.close()


def test_a_worker_that_stops_reading_its_stream_is_cut_off_and_its_tasks_redelivered() -> None:
    config = FAST.replace(ping_interval=0.1, ping_timeout=0.5, lease_grace=0.05)
    with running_broker(config) as running, grpc.insecure_channel(running.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        ids = {
            tasks.Submit(submit(args=_near_limit_args()), timeout=TIMEOUT).task_id for _ in range(8)
        }
        hello = worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="stuck"))
        grant = worker_pb2.WorkerMessage(report=worker_pb2.Report(credit=8))
        # A raw stream whose responses are never read: 8 MiB of assignments fill its windows.
        stuck = worker_pb2_grpc.WorkerServiceStub(channel).Session(iter([hello, grant]))
        try:
            wait_until(lambda: running.stream_count() == 1)
            # The handler gives up on a write that is not taken within the ping timeout.
            wait_until(lambda: running.stream_count() == 0)
            healthy = FakeWorker(running.address, worker_id="healthy", channel=channel)
            try:
                healthy.credit(8)
                assert {a.task_id for a in healthy.assignments(8)} == ids
            finally:
                healthy.close()
        finally:
            stuck.cancel()  # type: ignore[no-untyped-call]


def test_rejections_for_a_report_of_many_unknown_leases_arrive_in_several_messages(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    # 150,000 made-up lease ids fit one 3 MB report, but their rejections (each with its reason)
    # come to about 10 MB: as one message they would end the worker's stream.
    bogus = [f"bogus-{index:012d}" for index in range(150_000)]
    worker = FakeWorker(broker.address)
    try:
        worker.report(started_lease_ids=bogus)
        rejected: list[str] = []
        while len(rejected) < len(bogus):
            message = worker.expect("rejections", timeout=TIMEOUT)
            assert message.ByteSize() <= worker.welcome.max_message_bytes
            rejected.extend(r.lease_id for r in message.rejections.rejections)
        assert rejected == bogus
        # The stream is still open and the worker still gets work.
        task_id = tasks.Submit(submit(), timeout=TIMEOUT).task_id
        worker.credit(1)
        assert [a.task_id for a in worker.assignments(1)] == [task_id]
    finally:
        worker.close()


def _near_limit_args() -> tasks_pb2.Payload:
    body = b'"' + b"x" * (NEAR_LIMIT - 2) + b'"'
    return tasks_pb2.Payload(content_type="application/json", body=body)


def test_a_session_that_never_says_hello_is_ended() -> None:
    config = FAST.replace(ping_interval=0.1, ping_timeout=0.3)
    with running_broker(config) as running, grpc.insecure_channel(running.address) as channel:
        silent: queue.Queue[worker_pb2.WorkerMessage | None] = queue.Queue()
        call = worker_pb2_grpc.WorkerServiceStub(channel).Session(iter(silent.get, None))
        try:
            with pytest.raises(grpc.RpcError) as raised:
                list(call)
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no Hello" in str(raised.value.details())
        finally:
            silent.put(None)


def test_a_hello_with_a_malformed_rate_limit_is_refused_naming_the_task(
    broker: RunningBroker,
) -> None:
    hello = worker_pb2.Hello(worker_id="bad-rate", rate_limits={"tasks.add": "ten a minute"})
    with grpc.insecure_channel(broker.address) as channel:
        stream = worker_pb2_grpc.WorkerServiceStub(channel).Session(
            iter([worker_pb2.WorkerMessage(hello=hello)])
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stream))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Hello.rate_limits['tasks.add']" in (refused.value.details() or "")
