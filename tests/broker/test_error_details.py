"""Typed refusals on the wire: what a client that has only the protos and grpcio-status sees."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker.config import BrokerConfig
from broker.testing import running_broker
from celeriac.v1 import client_pb2, client_pb2_grpc
from tests.broker.helpers import submit

TIMEOUT = 5.0


def error_info(error: object) -> error_details_pb2.ErrorInfo:
    """Decode the ErrorInfo the way any gRPC client does (google.rpc.Status details)."""
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    return info


def refusal(tasks: client_pb2_grpc.TaskServiceStub, request: client_pb2.SubmitRequest) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as raised:
        tasks.Submit(request, timeout=TIMEOUT)
    assert isinstance(raised.value, grpc.Call)
    return raised.value


def test_a_plain_stub_decodes_reason_domain_and_the_limit_of_a_refusal() -> None:
    with (
        running_broker(BrokerConfig(max_payload_bytes=100, max_queued=1)) as broker,
        grpc.insecure_channel(broker.address) as channel,
    ):
        tasks = client_pb2_grpc.TaskServiceStub(channel)

        big = refusal(tasks, submit(args={"content_type": "application/json", "body": b"1" * 101}))
        assert big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(big)
        assert (info.reason, info.domain) == ("PAYLOAD_TOO_LARGE", "celeriac.dev")
        assert dict(info.metadata) == {"limit": "max_payload_bytes", "max": "100", "value": "101"}

        tasks.Submit(submit(), timeout=TIMEOUT)
        full = refusal(tasks, submit())
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(full)
        assert info.reason == "QUEUE_FULL"
        assert dict(info.metadata) == {"limit": "max_queued", "max": "1", "value": "1"}

        bad = refusal(tasks, submit(priority=12))
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(bad).reason == "INVALID_ARGUMENT"

        with pytest.raises(grpc.RpcError) as raised:
            tasks.GetResult(client_pb2.GetResultRequest(task_id="nope"), timeout=TIMEOUT)
        assert error_info(raised.value).reason == "NOT_FOUND"
