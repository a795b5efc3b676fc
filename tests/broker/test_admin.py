"""AdminService over a real channel: queues, workers, dead letters, purge."""

from __future__ import annotations

from broker.testing import RunningBroker
from celeriac.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    tasks_pb2,
    worker_pb2,
)
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import spec

TIMEOUT = 5.0


def test_queues_workers_and_dead_letters_through_the_admin_service(
    broker: RunningBroker,
    tasks: client_pb2_grpc.TaskServiceStub,
    admin: admin_pb2_grpc.AdminServiceStub,
) -> None:
    batch = client_pb2.SubmitManyRequest(tasks=[spec(queue="mail"), spec(queue="mail")])
    ids = [r.task_id for r in tasks.SubmitMany(batch, timeout=TIMEOUT).results]
    worker = FakeWorker(broker.address, worker_id="w-admin", queues=("mail",))
    try:
        worker.credit(1)
        (assignment,) = worker.assignments(1)
        queues = admin.ListQueues(admin_pb2.ListQueuesRequest(), timeout=TIMEOUT).queues
        mail = next(q for q in queues if q.name == "mail")
        assert (mail.ready, mail.leased, mail.consumers) == (1, 1, 1)
        (info,) = admin.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=TIMEOUT).workers
        assert info.worker_id == "w-admin" and info.leased == 1 and info.credit == 0
        error = tasks_pb2.TaskError(type="builtins.KeyError", message="'x'")
        failure = worker_pb2.Outcome(
            lease_id=assignment.lease_id, state=tasks_pb2.TASK_STATE_FAILURE, error=error
        )
        worker.report(outcomes=[failure])
        wait = client_pb2.GetResultRequest(task_id=assignment.task_id, wait_ms=5000)
        result = tasks.GetResult(wait, timeout=TIMEOUT).result
        assert result.state == tasks_pb2.TASK_STATE_FAILURE and result.dead_lettered
        listing = admin.ListDeadLetters(
            admin_pb2.ListDeadLettersRequest(queue="mail"), timeout=TIMEOUT
        )
        assert listing.total == 1
        assert listing.dead_letters[0].task.error.type == "builtins.KeyError"
        requeue = admin_pb2.RequeueDeadLettersRequest(task_ids=[assignment.task_id])
        assert admin.RequeueDeadLetters(requeue, timeout=TIMEOUT).requeued == 1
        queues = admin.ListQueues(admin_pb2.ListQueuesRequest(), timeout=TIMEOUT).queues
        assert next(q for q in queues if q.name == "mail").ready == 2
        purge = admin_pb2.PurgeQueueRequest(queue="mail")
        assert admin.PurgeQueue(purge, timeout=TIMEOUT).purged == 2
        for task_id in ids:
            state = tasks.GetResult(client_pb2.GetResultRequest(task_id=task_id), timeout=TIMEOUT)
            assert state.result.state == tasks_pb2.TASK_STATE_REVOKED
    finally:
        worker.close()


def test_purging_dead_letters_by_queue(
    broker: RunningBroker, admin: admin_pb2_grpc.AdminServiceStub
) -> None:
    purge = admin_pb2.PurgeDeadLettersRequest(all=True, queue="none")
    assert admin.PurgeDeadLetters(purge, timeout=TIMEOUT).purged == 0
