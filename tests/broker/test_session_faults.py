"""Session streams under faults: large batches, silent peers, slow readers, bad reports."""

from __future__ import annotations

from broker.testing import RunningBroker
from celeriac.v1 import client_pb2_grpc, tasks_pb2
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import submit

TIMEOUT = 5.0
NEAR_LIMIT = 1024 * 1024 - 16  # just under the default max_payload_bytes


def test_assignments_larger_than_one_message_arrive_in_several(
    broker: RunningBroker, tasks: client_pb2_grpc.TaskServiceStub
) -> None:
    # Six near-limit arguments exceed gRPC's 4 MiB message limit when sent as one batch.
    body = b'"' + b"x" * (NEAR_LIMIT - 2) + b'"'
    args = tasks_pb2.Payload(content_type="application/json", body=body)
    ids = {tasks.Submit(submit(args=args), timeout=TIMEOUT).task_id for _ in range(6)}
    worker = FakeWorker(broker.address)
    try:
        worker.credit(6)
        assignments = worker.assignments(6)
        assert {a.task_id for a in assignments} == ids
        assert all(a.attempt == 1 and a.args.body == body for a in assignments)
    finally:
        worker.close()
