"""Graceful shutdown: refuse at once, end idle clients and held waits, wait only for real work;
and outcome acknowledgements to workers, riding with new work."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pytest

from broker.testing import running_broker
from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2, worker_pb2
from client import Celeriac
from client.errors import BrokerUnavailable
from client.status import error_info
from tests.broker.conftest import FAST
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import submit
from tests.support import BrokerProcess

TIMEOUT = 5.0


def test_sigterm_ends_idle_sessions_and_held_waits_and_the_broker_exits_at_once() -> None:
    with BrokerProcess("--shutdown-grace", "30") as broker:
        # An idle client with its session stream open and a wait held on it (no worker runs the
        # task), and a unary wait held by the broker: neither may hold the exit up.
        app = Celeriac("idle", broker=broker.address, connect_timeout=1)
        pending = app.send_task("tests.e2e.tasks.add", args=(1, 2))
        failures: list[BaseException] = []

        def wait_on_session() -> None:
            try:
                pending.get(timeout=25)
            except BaseException as error:
                failures.append(error)

        waiter = threading.Thread(target=wait_on_session)
        waiter.start()
        with grpc.insecure_channel(broker.address) as channel:
            stub = client_pb2_grpc.TaskServiceStub(channel)
            held = stub.GetResult.future(
                client_pb2.GetResultRequest(task_id=pending.id, wait_ms=25_000), timeout=30
            )
            # A call after it on the same connection is answered once the wait is held.
            stub.ServerInfo(client_pb2.ServerInfoRequest(), timeout=TIMEOUT)
            assert not held.done()
            started = time.monotonic()
            broker.signal(signal.SIGTERM)
            assert broker.wait(20) == 0
            exited_after = time.monotonic() - started
            with pytest.raises(grpc.RpcError) as raised:
                held.result(timeout=TIMEOUT)
        waiter.join(TIMEOUT)
        app.close()
    # Exit took 30 s (the whole grace) with one idle client before.
    assert exited_after < 5.0
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(raised.value.trailing_metadata() or ())
    assert info is not None and info.reason == "SHUTTING_DOWN"
    # The session's wait was answered too; asked once more, no broker came back in time.
    assert not waiter.is_alive()
    assert len(failures) == 1 and isinstance(failures[0], BrokerUnavailable)
    assert "Traceback" not in broker.output and "CancelledError" not in broker.output


def test_the_grace_waits_for_running_tasks_only_and_their_outcomes_are_applied() -> None:
    with running_broker(FAST) as broker, grpc.insecure_channel(broker.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        task_id = tasks.Submit(submit(), timeout=TIMEOUT).task_id
        worker = FakeWorker(broker.address)
        worker.credit(1)
        (assignment,) = worker.assignments(1)
        stopper = threading.Thread(target=broker.stop, kwargs={"grace": 20.0})
        stopped_at = time.monotonic()
        stopper.start()
        assert "shutting down" in worker.expect("drain").drain.reason
        refused_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            tasks.Submit(submit(), timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - refused_at < 1.0  # refused, not held until a deadline
        # The running task finishes during the grace: its outcome is applied and acked.
        worker.succeed(assignment.lease_id)
        acks = worker.expect("outcome_acks").outcome_acks
        assert list(acks.lease_ids) == [assignment.lease_id]
        record = broker.call(lambda core: core.get(task_id))
        assert record is not None and record.state.name == "SUCCESS"
        worker.close()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive()
    # Done once the worker's stream ended, long before the 20 s grace.
    assert time.monotonic() - stopped_at < 10.0


def test_outcome_acks_ride_with_the_next_assignments() -> None:
    with running_broker(FAST) as broker, grpc.insecure_channel(broker.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        for _ in range(4):
            tasks.Submit(submit(), timeout=TIMEOUT)
        worker = FakeWorker(broker.address)
        worker.credit(3)
        leases = [assignment.lease_id for assignment in worker.assignments(3)]
        result = tasks_pb2.Payload(content_type="application/json", body=b"8")
        outcomes = [
            worker_pb2.Outcome(lease_id=lease, state=tasks_pb2.TASK_STATE_SUCCESS, result=result)
            for lease in [*leases, "no-such-lease"]
        ]
        worker.report(outcomes=outcomes, credit=1)  # one Report: three outcomes, a stale one
        # The fourth task goes out with every ack of the Report (applied and rejected alike:
        # the worker may forget them all), in no message of their own.
        assert worker.welcome.acks_outcomes
        assignments = worker.expect("assignments").assignments
        assert len(assignments.tasks) == 1
        assert list(assignments.outcome_acks) == [*leases, "no-such-lease"]
        assert worker.expect("rejections").rejections.rejections[0].lease_id == "no-such-lease"
        # With no new work to ride with, acks go on their own a moment later.
        worker.report(outcomes=[outcomes[0]])
        assert worker.expect("rejections").rejections.rejections[0].lease_id == leases[0]
        assert list(worker.expect("outcome_acks").outcome_acks.lease_ids) == [leases[0]]
        assert worker.outcome_acks == []  # none went alone before
        worker.close()
