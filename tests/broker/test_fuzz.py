"""Property-based fuzz of every request the broker takes, against a real in-process broker.

Every request message of TaskService, WorkerService and AdminService is generated from its
descriptor (any field set or not, any value its type allows: unknown enum numbers, huge
timestamps, control characters in names), and so are plain random bytes. Properties: nothing
answers UNKNOWN or INTERNAL (or hangs), the broker logs no error, and afterwards a normal
submit and result still work. ``make fuzz`` runs it longer (``CELERIAC_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.testing import RunningBroker, running_broker
from celeriac.v1 import admin_pb2, client_pb2, tasks_pb2, worker_pb2
from tests.broker.conftest import FAST
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import submit

EXAMPLES = int(os.environ.get("CELERIAC_FUZZ_EXAMPLES", "120"))
# A call that takes this long means the broker hangs: a failure like any other.
CALL_TIMEOUT = 10.0
SUBSCRIPTION_WAIT = 0.3
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
FORBIDDEN_NUMBERS = {code.value[0] for code in FORBIDDEN}
# Held waits are capped so that an example that waits on a task it submitted ends quickly.
MAX_WAIT_MS = 50
MAX_DEPTH = 3

SERVICES = [
    client_pb2.DESCRIPTOR.services_by_name["TaskService"],
    worker_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
]
METHODS = [method for service in SERVICES for method in service.methods]

_INTEGERS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Any value of a scalar field's type."""
    kind = field.type
    if kind in _INTEGERS:
        low, high = _INTEGERS[kind]
        edges = st.sampled_from([low, high, 0, 1, -1 if low < 0 else 2])
        return st.one_of(edges, st.integers(low, high))
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 40)  # proto3 enums are open: unknown numbers decode
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=40)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    assert kind == FieldDescriptor.TYPE_FLOAT, field.full_name
    return st.floats(width=32)


def value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """Any value of ``field``: a scalar, a message, a list or a map."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, item = (field.message_type.fields_by_name[name] for name in ("key", "value"))
        return st.dictionaries(single(key, depth), single(item, depth), max_size=3)
    if field.is_repeated:
        return st.lists(single(field, depth), max_size=3)
    return single(field, depth)


def single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message(field.message_type, depth + 1)
    return scalar(field)


@functools.cache
def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """A message of ``descriptor`` with any subset of its fields set to any values."""
    if depth > MAX_DEPTH:
        return st.builds(GetMessageClass(descriptor))
    fields = {field.name: value(field, depth) for field in descriptor.fields}
    cls = GetMessageClass(descriptor)
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: build(cls, values))


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    built = cls()
    for name, item in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(built, name)
        if isinstance(item, dict):
            entry_type = field.message_type
            assert entry_type is not None  # a map field's entries are messages
            if entry_type.fields_by_name["value"].message_type is not None:
                for key, entry in item.items():
                    target[key].CopyFrom(entry)
            else:
                target.update(item)
        elif isinstance(item, list):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for entry in item:
                    target.add().CopyFrom(entry)
            else:
                target.extend(item)
        elif isinstance(item, Message):
            target.CopyFrom(item)
        else:
            setattr(built, name, MAX_WAIT_MS if name == "wait_ms" and item else item)
    return built


def request_bytes(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    """What a peer may send to ``method``: a fuzzed message of its input type, or any bytes."""
    valid = message(method.input_type).map(lambda m: m.SerializeToString())
    return st.one_of(valid, valid, st.binary(max_size=200))


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


class Errors(logging.Handler):
    """Every error (or traceback) anything logs while the module runs: the broker, gRPC."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def logged_errors() -> Iterator[list[logging.LogRecord]]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def broker(logged_errors: list[logging.LogRecord]) -> Iterator[RunningBroker]:
    with running_broker(FAST) as running:
        yield running


@pytest.fixture(scope="module")
def channel(broker: RunningBroker) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(broker.address) as chan:
        yield chan


def call(channel: grpc.Channel, method: MethodDescriptor, requests: list[bytes]) -> None:
    """Send ``requests`` to ``method`` and check every status the broker answers."""
    try:
        if method.client_streaming:
            stream = channel.stream_stream(
                path(method), request_serializer=None, response_deserializer=None
            )
            for data in stream(iter(requests), timeout=CALL_TIMEOUT):
                check_reply(method, data)
        elif method.server_streaming:
            # A subscription (AdminService.Events) stays open until its caller leaves: a request
            # it accepts ends at this short deadline, which is the right answer here.
            subscribe = channel.unary_stream(
                path(method), request_serializer=None, response_deserializer=None
            )
            try:
                for _ in subscribe(requests[0], timeout=SUBSCRIPTION_WAIT):
                    pass
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
        else:
            unary = channel.unary_unary(
                path(method), request_serializer=None, response_deserializer=None
            )
            unary(requests[0], timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        assert error.code() not in FORBIDDEN, (method.full_name, error.code(), error.details())
        assert "\n" not in (error.details() or ""), error.details()


def check_reply(method: MethodDescriptor, data: bytes) -> None:
    if method.output_type.full_name != "celeriac.v1.SessionReply":
        return
    reply = client_pb2.SessionReply.FromString(data)
    if reply.WhichOneof("reply") == "error":
        assert reply.error.code not in FORBIDDEN_NUMBERS, reply.error
        assert reply.error.reason, reply.error


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_request_gets_unknown_or_internal_and_the_broker_keeps_serving(
    channel: grpc.Channel, data: st.DataObject
) -> None:
    method = data.draw(st.sampled_from(METHODS), label="method")
    count = data.draw(st.integers(1, 4)) if method.client_streaming else 1
    requests = [data.draw(request_bytes(method), label="request") for _ in range(count)]
    call(channel, method, requests)


def test_after_the_fuzz_a_normal_submit_and_result_work_and_nothing_logged_an_error(
    broker: RunningBroker, channel: grpc.Channel, logged_errors: list[logging.LogRecord]
) -> None:
    # Runs after the property above (same module, same broker); on its own it is a smoke test.
    stub_call = channel.unary_unary(
        "/celeriac.v1.TaskService/Submit",
        request_serializer=client_pb2.SubmitRequest.SerializeToString,
        response_deserializer=client_pb2.SubmitResponse.FromString,
    )
    task_id = stub_call(submit(queue="after-fuzz"), timeout=CALL_TIMEOUT).task_id
    worker = FakeWorker(broker.address, worker_id="after-fuzz@test", queues=("after-fuzz",))
    try:
        worker.credit(1)
        (assignment,) = worker.assignments(1)
        assert assignment.task_id == task_id
        worker.succeed(assignment.lease_id, b"8")
        get = channel.unary_unary(
            "/celeriac.v1.TaskService/GetResult",
            request_serializer=client_pb2.GetResultRequest.SerializeToString,
            response_deserializer=client_pb2.GetResultResponse.FromString,
        )
        request = client_pb2.GetResultRequest(task_id=task_id, wait_ms=5000)
        result = get(request, timeout=CALL_TIMEOUT).result
        assert (result.state, result.result.body) == (tasks_pb2.TASK_STATE_SUCCESS, b"8")
    finally:
        worker.close()
    assert not logged_errors, [record.getMessage() for record in logged_errors]
