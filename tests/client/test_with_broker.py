"""The client against a real in-process broker (``broker.testing``), with no worker running."""

from __future__ import annotations

import builtins
from collections.abc import Iterator

import grpc
import pytest

from broker.config import BrokerConfig
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import admin_pb2, admin_pb2_grpc
from client import AsyncResult, Celeriac, Signature, group
from client.errors import PayloadTooLarge, TaskNotFound, TaskRevokedError, TimeoutError

# Tasks in this queue are never consumed: no worker runs in these tests.
IDLE = "nobody-consumes-this"


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    with running_broker(BrokerConfig(max_payload_bytes=10_000)) as running:
        yield running


@pytest.fixture
def app(broker: RunningBroker) -> Iterator[Celeriac]:
    with Celeriac("client-tests", broker=broker.address, connect_timeout=5) as client_app:
        yield client_app


def depth(broker: RunningBroker, queue: str) -> int:
    with grpc.insecure_channel(broker.address) as channel:
        listing = admin_pb2_grpc.AdminServiceStub(channel).ListQueues(
            admin_pb2.ListQueuesRequest(), timeout=5
        )
    return sum(info.ready + info.scheduled for info in listing.queues if info.name == queue)


def test_a_submitted_task_is_pending_with_its_name_and_queue(app: Celeriac) -> None:
    result = app.send_task("tasks.add", args=(1, 2), queue=IDLE)
    assert result.state == "PENDING"
    assert not result.ready() and not result.successful() and not result.failed()
    assert (result.name, result.queue) == ("tasks.add", IDLE)
    assert result.result is None and result.traceback is None


def test_an_unknown_id_is_unknown_not_pending(app: Celeriac) -> None:
    unknown = AsyncResult("never-submitted", app=app)
    assert unknown.state == "UNKNOWN"
    assert unknown.result is None and unknown.info is None
    with pytest.raises(TaskNotFound, match="never-submitted"):
        unknown.get(timeout=5)


def test_get_times_out_on_a_task_no_worker_runs(app: Celeriac) -> None:
    result = app.send_task("tasks.add", args=(1, 2), queue=IDLE)
    with pytest.raises(TimeoutError, match="not ready"):
        result.get(timeout=0.2)
    with pytest.raises(builtins.TimeoutError):  # also the builtin, for code unaware of Celeriac
        result.get(timeout=0.05)


def test_a_repeated_task_id_returns_the_first_task(app: Celeriac, broker: RunningBroker) -> None:
    queue = "dedup-by-id"
    first = app.send_task("tasks.add", args=(1, 2), queue=queue, task_id="same-id")
    second = app.send_task("tasks.add", args=(3, 4), queue=queue, task_id="same-id")
    keyed = {app.send_task("t", queue=queue, idempotency_key="k").id for _ in range(3)}
    assert first.id == second.id == "same-id"
    assert len(keyed) == 1
    assert depth(broker, queue) == 2


def test_revoking_a_queued_task_makes_it_revoked(app: Celeriac) -> None:
    result = app.send_task("tasks.add", args=(1, 2), queue=IDLE)
    assert result.revoke(reason="not needed") == "revoked"
    assert result.state == "REVOKED" and result.ready() and not result.failed()
    with pytest.raises(TaskRevokedError, match="not needed"):
        result.get(timeout=5)
    assert isinstance(result.get(timeout=5, propagate=False), TaskRevokedError)
    assert app.control.revoke([result.id, "no-such-id"]) == ["already-finished", "unknown"]


def test_forget_drops_the_result(app: Celeriac) -> None:
    result = app.send_task("tasks.add", args=(1, 2), queue=IDLE)
    result.revoke()
    assert result.state == "REVOKED"
    result.forget()
    assert result.state == "UNKNOWN"


def test_a_group_is_submitted_in_batches_and_its_results_collected_together(
    broker: RunningBroker,
) -> None:
    queue = "group-depth"
    with Celeriac("groups", broker=broker.address, group_chunk_size=100) as app:
        result = group(
            Signature(app, "tasks.add", (i, i), options={"queue": queue}) for i in range(250)
        ).apply_async()
        assert len(result) == 250 and len({r.id for r in result}) == 250
        assert depth(broker, queue) == 250
        assert not result.ready() and result.completed_count() == 0
        with pytest.raises(TimeoutError, match="250 of 250"):
            result.get(timeout=0.2)


def test_oversize_arguments_are_refused_by_the_broker_as_payload_too_large(app: Celeriac) -> None:
    with pytest.raises(PayloadTooLarge, match="bytes") as raised:
        app.send_task("tasks.add", args=("x" * 20_000,), queue=IDLE)
    assert raised.value.reason == "PAYLOAD_TOO_LARGE"
    assert raised.value.metadata["limit"] == "max_payload_bytes"
