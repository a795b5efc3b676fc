"""A broker that is not there: calls fail with BrokerUnavailable instead of hanging."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from client import AsyncResult, Celeriac
from client.errors import (
    BrokerGone,
    BrokerUnavailable,
    CeleriacError,
    InvalidTaskSpec,
    LimitExceeded,
    PayloadTooLarge,
    QueueFull,
    TaskNotFound,
)
from client.status import error_from_status


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def app() -> Celeriac:
    return Celeriac("down", broker=f"127.0.0.1:{closed_port()}", connect_timeout=0.3)


def test_importing_and_declaring_tasks_never_connects(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    assert add(1, 2) == 3  # no broker needed for a direct call either


def test_delay_fails_with_broker_unavailable_naming_the_address(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(BrokerUnavailable, match=app.conf.target):
        add.delay(1, 2)
    with pytest.raises(BrokerUnavailable):  # and again: the failure does not stick or hang
        AsyncResult("some-id", app=app).get(timeout=1)
    app.close()


def test_the_asyncio_flavour_fails_the_same_way(app: Celeriac) -> None:
    async def main() -> None:
        with pytest.raises(BrokerUnavailable):
            await app.asend_task("tasks.add", args=(1, 2))
        await app.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", BrokerGone),
        (grpc.StatusCode.UNAVAILABLE, "", BrokerGone),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", BrokerUnavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME", InvalidTaskSpec),
        (grpc.StatusCode.INVALID_ARGUMENT, "", InvalidTaskSpec),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL", QueueFull),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE", PayloadTooLarge),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "HELD_BYTES_EXCEEDED", LimitExceeded),
        # gRPC's own message size limit carries no reason.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "", PayloadTooLarge),
        # A reason this client does not know yet falls back to its status code.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SOMETHING_NEW", PayloadTooLarge),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", TaskNotFound),
        (grpc.StatusCode.INTERNAL, "", CeleriacError),
    ],
)
def test_reasons_then_status_codes_map_onto_the_error_tree_and_keep_the_details(
    code: grpc.StatusCode, reason: str, expected: type[Exception]
) -> None:
    # The message text says "full" for every case: only the reason may pick the class.
    details = "something is full"
    error = error_from_status(code, details, "Submit", "h:1", reason=reason, metadata={"max": "1"})
    assert type(error) is expected
    assert "Submit" in str(error) and "h:1" in str(error) and details in str(error)
    assert isinstance(error, CeleriacError)
    assert error.reason == reason
    assert dict(error.metadata) == ({"max": "1"} if reason else {})
