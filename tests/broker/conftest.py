"""Fixtures for the broker's service tests: a real in-process broker and stubs to it."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from broker.config import BrokerConfig
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import admin_pb2_grpc, client_pb2_grpc

FAST = BrokerConfig(lease_grace=0.2, ping_interval=0.5, ping_timeout=5.0, shutdown_grace=0.5)


@pytest.fixture
def broker() -> Iterator[RunningBroker]:
    with running_broker(FAST) as running:
        yield running


@pytest.fixture
def channel(broker: RunningBroker) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(broker.address) as chan:
        yield chan


@pytest.fixture
def tasks(channel: grpc.Channel) -> client_pb2_grpc.TaskServiceStub:
    return client_pb2_grpc.TaskServiceStub(channel)


@pytest.fixture
def admin(channel: grpc.Channel) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(channel)
