"""Health, reflection and graceful shutdown of the in-process server."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from broker.testing import RunningBroker, running_broker
from celeriac.v1 import client_pb2_grpc
from tests.broker.conftest import FAST
from tests.broker.fake_worker import FakeWorker
from tests.broker.helpers import submit

TIMEOUT = 5.0


def test_health_reports_serving_for_the_broker_and_each_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "celeriac.v1.TaskService", "celeriac.v1.WorkerService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_celeriac_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    names = {service.name for service in answer.list_services_response.service}
    assert {"celeriac.v1.TaskService", "celeriac.v1.AdminService", "grpc.health.v1.Health"} <= names


def test_shutdown_drains_workers_and_refuses_new_work() -> None:
    with running_broker(FAST) as broker:
        worker = FakeWorker(broker.address)
        stopper = threading.Thread(target=broker.stop, kwargs={"grace": 5.0})
        stopper.start()
        drain = worker.expect("drain").drain
        assert "shutting down" in drain.reason
        with grpc.insecure_channel(broker.address) as channel:
            tasks = client_pb2_grpc.TaskServiceStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                tasks.Submit(submit(), timeout=TIMEOUT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        worker.close()
        stopper.join(TIMEOUT)
        assert not stopper.is_alive()


def test_running_broker_can_be_stopped_twice(broker: RunningBroker) -> None:
    broker.stop()
    broker.stop()
