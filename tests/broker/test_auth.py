"""Bearer tokens and roles on a real broker: every method of the three services, every role.

The expected table is written out here, apart from broker.service.auth's, so that a change to
either one shows up as a failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from broker.config import BrokerConfig
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    client_pb2,
    client_pb2_grpc,
    tasks_pb2,
    worker_pb2,
)
from client import Celeriac
from client.errors import AuthenticationError, ContentTypeRefused, PermissionDenied

TOKENS = {
    "producer": "producer-token-" + uuid.uuid4().hex,
    "worker": "worker-token-" + uuid.uuid4().hex,
    "admin": "admin-token-" + uuid.uuid4().hex,
}
TOKEN_LINES = "\n".join(f"{role}:{role}-name:{token}" for role, token in TOKENS.items())

P, W = "producer", "worker"
# Who besides admin may call each method.
EXPECTED: dict[str, set[str]] = {
    "celeriac.v1.TaskService/Submit": {P},
    "celeriac.v1.TaskService/SubmitMany": {P},
    "celeriac.v1.TaskService/GetResult": {P, W},
    "celeriac.v1.TaskService/GetResults": {P, W},
    "celeriac.v1.TaskService/Revoke": {P},
    "celeriac.v1.TaskService/Forget": {P},
    "celeriac.v1.TaskService/ServerInfo": {P, W},
    "celeriac.v1.TaskService/Session": {P},
    "celeriac.v1.WorkerService/Session": {W},
    "celeriac.v1.AdminService/ListQueues": set(),
    "celeriac.v1.AdminService/ListWorkers": set(),
    "celeriac.v1.AdminService/ListDeadLetters": set(),
    "celeriac.v1.AdminService/RequeueDeadLetters": set(),
    "celeriac.v1.AdminService/PurgeDeadLetters": set(),
    "celeriac.v1.AdminService/PurgeQueue": set(),
    "celeriac.v1.AdminService/Events": set(),
    "celeriac.v1.AdminService/ControlWorkers": set(),
    "celeriac.v1.AdminService/ListPeriodicTasks": set(),
    "celeriac.v1.AdminService/RemovePeriodicTask": set(),
    "celeriac.v1.AdminService/SetRateLimit": set(),
}
SERVICES = (
    client_pb2.DESCRIPTOR.services_by_name["TaskService"],
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
)
METHODS = {f"{s.full_name}/{m.name}": m for s in SERVICES for m in s.methods}
CALLERS = ("none", "bad", "producer", "worker", "admin")
REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    with running_broker(BrokerConfig(tokens=TOKEN_LINES)) as running:
        yield running


def metadata_of(caller: str) -> tuple[tuple[str, str], ...]:
    if caller == "none":
        return ()
    token = "not-a-known-token-at-all" if caller == "bad" else TOKENS[caller]
    return (("authorization", f"Bearer {token}"),)


def call(channel: grpc.Channel, method: MethodDescriptor, caller: str) -> grpc.StatusCode:
    """Make the call with an empty request (or an empty request stream); return its status."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    serializer, deserializer = request_class.SerializeToString, response_class.FromString
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, serializer, deserializer)
            list(stream(iter(()), metadata=metadata_of(caller), timeout=10))
        elif method.server_streaming:
            # An allowed subscription stays open: its deadline ends it (not a refusal).
            watch = channel.unary_stream(path, serializer, deserializer)
            list(watch(request_class(), metadata=metadata_of(caller), timeout=1))
        else:
            unary = channel.unary_unary(path, serializer, deserializer)
            unary(request_class(), metadata=metadata_of(caller), timeout=10)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return error.code()
    return grpc.StatusCode.OK


def test_the_expected_table_covers_every_method() -> None:
    assert set(EXPECTED) == set(METHODS)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_caller_against_each_method(broker: RunningBroker, name: str, caller: str) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        code = call(channel, METHODS[name], caller)
    if caller in ("none", "bad"):
        assert code is grpc.StatusCode.UNAUTHENTICATED
    elif caller == "admin" or caller in EXPECTED[name]:
        assert code not in REFUSALS
    else:
        assert code is grpc.StatusCode.PERMISSION_DENIED


def test_health_and_reflection_stay_open(broker: RunningBroker) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(broker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_refused_call_changes_nothing(broker: RunningBroker) -> None:
    queue = "kept-" + uuid.uuid4().hex[:8]
    spec = tasks_pb2.TaskSpec(
        name="tasks.add",
        queue=queue,
        args=tasks_pb2.Payload(content_type="application/json", body=b"[[1, 2], {}]"),
    )
    with grpc.insecure_channel(broker.address) as channel:
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            tasks.Submit(client_pb2.SubmitRequest(task=spec), metadata=metadata_of(W), timeout=5)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        as_admin = metadata_of("admin")
        queues = admin.ListQueues(admin_pb2.ListQueuesRequest(), metadata=as_admin, timeout=5)
        assert queue not in {q.name for q in queues.queues}
        tasks.Submit(client_pb2.SubmitRequest(task=spec), metadata=metadata_of(P), timeout=5)
        purge = admin_pb2.PurgeQueueRequest(queue=queue)
        with pytest.raises(grpc.RpcError) as refused:
            admin.PurgeQueue(purge, metadata=metadata_of(P), timeout=5)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in str(refused.value.details())
        queues = admin.ListQueues(admin_pb2.ListQueuesRequest(), metadata=as_admin, timeout=5)
        assert {q.name: q.ready for q in queues.queues}[queue] == 1


def test_the_client_raises_typed_errors_for_missing_and_wrong_tokens(
    broker: RunningBroker,
) -> None:
    anonymous = Celeriac("anonymous", broker=broker.address, connect_timeout=5)
    with pytest.raises(AuthenticationError, match="bearer token") as unauthenticated:
        anonymous.send_task("tasks.add", args=(1, 2))
    assert unauthenticated.value.reason == "UNAUTHENTICATED"
    as_worker = Celeriac("as-worker", broker=broker.address, token=TOKENS[W])
    with pytest.raises(PermissionDenied, match="worker-name"):
        as_worker.send_task("tasks.add", args=(1, 2))
    as_producer = Celeriac("as-producer", broker=broker.address, token=TOKENS[P])
    assert as_producer.send_task("tasks.add", args=(1, 2)).state == "PENDING"
    for app in (anonymous, as_worker, as_producer):
        app.close()


def test_pickle_is_refused_at_the_broker_unless_accepted() -> None:
    with (
        running_broker() as strict,
        running_broker(BrokerConfig(accept_content="json,pickle")) as lenient,
    ):
        refused = Celeriac("strict", broker=strict.address, allow_pickle=True)
        with pytest.raises(ContentTypeRefused, match="not accepted by this broker"):
            refused.send_task("tasks.add", args=(1, 2), serializer="pickle")
        assert refused.send_task("tasks.add", args=(1, 2)).state == "PENDING"  # JSON still is
        accepted = Celeriac("lenient", broker=lenient.address, allow_pickle=True)
        assert accepted.send_task("tasks.add", args=(1, 2), serializer="pickle").state == "PENDING"
        refused.close()
        accepted.close()
