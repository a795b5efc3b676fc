"""Bytes that do not decode: INVALID_ARGUMENT with a typed reason, a rate-limited log, a count."""

from __future__ import annotations

import logging

import grpc
import pytest

from broker.errors import InvalidArgument, MalformedMessage, NotFound, QueueFull
from broker.service.refusals import Refusals, printable
from broker.testing import RunningBroker
from celeriac.v1 import client_pb2, client_pb2_grpc
from tests.broker.helpers import submit
from tests.broker.test_error_details import error_info

TIMEOUT = 5.0
# Field 1, length-delimited, claiming 127 bytes that never come: no message decodes from it.
UNDECODABLE = b"\x0a\x7f\x01"

UNARY_METHODS = [
    f"/celeriac.v1.TaskService/{name}"
    for name in ("Submit", "SubmitMany", "GetResult", "GetResults", "Revoke", "Forget")
] + [
    f"/celeriac.v1.AdminService/{name}"
    for name in ("ListQueues", "ListDeadLetters", "RequeueDeadLetters", "PurgeQueue")
]
STREAM_METHODS = ["/celeriac.v1.TaskService/Session", "/celeriac.v1.WorkerService/Session"]


def raw_unary(channel: grpc.Channel, method: str, data: bytes) -> grpc.Call:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as raised:
        call(data, timeout=TIMEOUT)
    assert isinstance(raised.value, grpc.Call)
    return raised.value


def raw_stream(channel: grpc.Channel, method: str, data: bytes) -> grpc.Call:
    call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as raised:
        list(call(iter([data]), timeout=TIMEOUT))
    assert isinstance(raised.value, grpc.Call)
    return raised.value


@pytest.mark.parametrize("method", UNARY_METHODS)
def test_undecodable_unary_requests_are_invalid_argument_with_a_reason(
    channel: grpc.Channel, method: str
) -> None:
    refused = raw_unary(channel, method, UNDECODABLE)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not decode" in refused.details() and "\n" not in refused.details()
    assert error_info(refused).reason == "MALFORMED_MESSAGE"


@pytest.mark.parametrize("method", STREAM_METHODS)
def test_an_undecodable_stream_message_ends_that_stream_with_a_reason(
    channel: grpc.Channel, tasks: client_pb2_grpc.TaskServiceStub, method: str
) -> None:
    refused = raw_stream(channel, method, UNDECODABLE)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused).reason == "MALFORMED_MESSAGE"
    assert tasks.Submit(submit(), timeout=TIMEOUT).created  # everyone else is still served


def test_bad_input_is_logged_once_per_interval_without_tracebacks_and_counted(
    broker: RunningBroker,
    channel: grpc.Channel,
    tasks: client_pb2_grpc.TaskServiceStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(30):
        raw_unary(channel, "/celeriac.v1.TaskService/Submit", UNDECODABLE)
    info = tasks.ServerInfo(client_pb2.ServerInfoRequest(), timeout=TIMEOUT)
    assert info.refused["MALFORMED_MESSAGE"] == 30
    lines = [r for r in caplog.records if "MALFORMED_MESSAGE" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_refusals_log_each_reason_once_per_interval_with_the_count_left_out() -> None:
    now = [0.0]
    refusals = Refusals(interval=10.0, clock=lambda: now[0])
    logged: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("broker.service.refusals")
    logger.addHandler(handler)
    try:
        for _ in range(5):
            refusals.record(MalformedMessage("bad bytes"), "TaskService.Submit")
        refusals.record(QueueFull("full", limit="max_queued"), "TaskService.Submit")
        refusals.record(NotFound("unknown task id"), "TaskService.GetResult")  # counted only
        now[0] = 10.0
        refusals.record(MalformedMessage("bad bytes"), "TaskService.Submit")
    finally:
        logger.removeHandler(handler)
    assert logged == [
        "refused TaskService.Submit: MALFORMED_MESSAGE: bad bytes",
        "refused TaskService.Submit: QUEUE_FULL: full",
        "refused TaskService.Submit: MALFORMED_MESSAGE: bad bytes"
        " (and 4 more MALFORMED_MESSAGE in the last 10 s)",
    ]
    assert dict(refusals.counts) == {"MALFORMED_MESSAGE": 6, "QUEUE_FULL": 1, "NOT_FOUND": 1}


def test_a_peers_text_in_a_log_line_cannot_forge_lines_or_flip_direction() -> None:
    text = printable("evil\nINFO forged line\x1b[2J\u202eexe.txt\x00")
    assert text.isprintable() and "\n" not in text
    assert text == "evil\\nINFO forged line\\x1b[2J\\u202eexe.txt\\x00"
    assert len(printable("x" * 10_000)) < 400
    assert InvalidArgument("plain").reason == "INVALID_ARGUMENT"
