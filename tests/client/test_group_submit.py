"""Group submission against a real in-process broker: shared options, pipelined chunks, errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from broker.testing import RunningBroker, running_broker
from client import Celeriac, Signature, group
from client.codec import submit_many_request
from client.errors import InvalidTaskSpec
from client.ids import new_task_id
from client.serialization import JSON, decode_args, encode, encode_args

# Tasks in this queue are never consumed: no worker runs in these tests.
IDLE = "nobody-consumes-this"


@pytest.fixture(scope="module")
def broker() -> Iterator[RunningBroker]:
    with running_broker() as running:
        yield running


@pytest.fixture
def app(broker: RunningBroker) -> Iterator[Celeriac]:
    # Chunks of two tasks, so a handful of tasks makes several SubmitMany calls in flight.
    with Celeriac("group-tests", broker=broker.address, group_chunk_size=2) as client_app:
        yield client_app


def test_chunks_in_flight_answer_in_group_order(app: Celeriac) -> None:
    ids = [f"ordered-{uuid.uuid4()}" for _ in range(9)]
    sent = group(
        Signature(app, "tasks.add", (i,), options={"task_id": task_id})
        for i, task_id in enumerate(ids)
    )
    result = sent.apply_async(queue=IDLE)
    assert [r.id for r in result.results] == ids
    assert [r.state for r in result.results] == ["PENDING"] * 9


def test_a_group_larger_than_one_message_goes_in_several_chunks(broker: RunningBroker) -> None:
    # Ten tasks of 600 kB: each is within the 1 MiB payload limit, together over the 4 MiB
    # message limit, which refused the whole chunk before chunks were cut by size too.
    with Celeriac("big-groups", broker=broker.address) as client_app:
        signatures = (Signature(client_app, "tasks.echo", ("x" * 600_000,)) for _ in range(10))
        result = group(signatures).apply_async(queue=IDLE)
        assert [r.state for r in result.results] == ["PENDING"] * 10
        assert len({r.id for r in result.results}) == 10


def test_revoke_and_forget_of_more_ids_than_one_message_holds(broker: RunningBroker) -> None:
    # 120k ids are ~4.6 MB in one request, over the broker's 4 MiB limit: they go in slices.
    ids = [str(uuid.uuid4()) for _ in range(120_000)]
    with Celeriac("many-ids", broker=broker.address) as client_app:
        assert client_app.control.revoke(ids) == ["unknown"] * len(ids)
        assert client_app.transport.forget(ids) == 0

        async def main() -> list[str]:
            outcomes = await client_app.aio_transport.revoke(ids, False, "")
            assert await client_app.aio_transport.forget(ids) == 0
            await client_app.aclose()
            return outcomes

        assert asyncio.run(main()) == ["unknown"] * len(ids)


def test_a_failed_chunk_names_the_tasks_accepted_and_not(app: Celeriac) -> None:
    ids = [f"chunks-{uuid.uuid4()}" for _ in range(6)]
    signatures = [
        Signature(app, "tasks.add", (i,), options={"task_id": task_id})
        for i, task_id in enumerate(ids)
    ]
    # The broker refuses this queue name, so the chunk holding tasks 2 and 3 is refused whole.
    signatures[3] = signatures[3].set(queue="no spaces allowed")
    with pytest.raises(InvalidTaskSpec) as raised:
        group(signatures).apply_async(queue=IDLE)
    message = str(raised.value)
    assert "tasks 2-3 of the group were not accepted" in message
    assert "tasks[1]" in message  # the broker's pointer into the refused chunk
    assert "tasks 0-1 were accepted" in message
    assert "tasks 4-5 (sent already) were accepted" in message
    states = [app.AsyncResult(task_id).state for task_id in ids]
    assert states == ["PENDING", "PENDING", "UNKNOWN", "UNKNOWN", "PENDING", "PENDING"]


def test_group_options_apply_to_every_task_resolved_once(app: Celeriac) -> None:
    result = group(Signature(app, "tasks.add", (i,)) for i in range(5)).apply_async(
        queue=IDLE, priority=7
    )
    records = [app.transport.get_result(r.id) for r in result.results]
    assert {(r.queue, r.name) for r in records} == {(IDLE, "tasks.add")}
    assert len({r.task_id for r in records}) == 5


def test_specs_sharing_options_keep_their_own_ids_and_arguments(app: Celeriac) -> None:
    specs = app._group_specs([Signature(app, "tasks.add", (i,)) for i in range(3)])
    assert specs[0].options is specs[1].options is specs[2].options
    request = submit_many_request(specs)
    assert [m.task_id for m in request.tasks] == [s.task_id for s in specs]
    assert [decode_args(m.args.body, m.args.content_type)[0] for m in request.tasks] == [
        [0], [1], [2]
    ]  # fmt: skip
    assert {(m.name, m.queue) for m in request.tasks} == {("tasks.add", "default")}


def test_task_ids_are_random_uuid4_strings() -> None:
    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    for task_id in ids:
        parsed = uuid.UUID(task_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, task_id)


def test_calls_without_arguments_encode_like_any_other() -> None:
    assert encode_args((), {}) == encode([[], {}], JSON)
    assert decode_args(encode_args((), {}), JSON) == ([], {})


def test_a_failed_chunk_from_an_event_loop_names_the_tasks_accepted_and_not(
    app: Celeriac,
) -> None:
    ids = [f"async-chunks-{uuid.uuid4()}" for _ in range(6)]
    signatures = [
        Signature(app, "tasks.add", (i,), options={"task_id": task_id, "queue": IDLE})
        for i, task_id in enumerate(ids)
    ]
    signatures[2] = signatures[2].set(queue="no spaces allowed")

    async def send() -> None:
        try:
            await group(signatures).aapply_async()
        finally:
            await app.aclose()

    with pytest.raises(InvalidTaskSpec) as raised:
        asyncio.run(send())
    message = str(raised.value)
    assert "tasks 2-3 of the group were not accepted" in message
    assert "tasks 4-5 (sent already) were accepted" in message
    states = [app.AsyncResult(task_id).state for task_id in ids]
    assert states == ["PENDING", "PENDING", "UNKNOWN", "UNKNOWN", "PENDING", "PENDING"]


def test_a_group_sent_from_an_event_loop_answers_in_order(app: Celeriac) -> None:
    ids = [f"async-ordered-{uuid.uuid4()}" for _ in range(7)]

    async def send() -> list[str]:
        try:
            sent = group(
                Signature(app, "tasks.add", (i,), options={"task_id": task_id})
                for i, task_id in enumerate(ids)
            )
            return [r.id for r in (await sent.aapply_async(queue=IDLE)).results]
        finally:
            await app.aclose()

    assert asyncio.run(send()) == ids


def test_equal_looking_options_of_another_type_are_checked_on_their_own(app: Celeriac) -> None:
    signatures = [Signature(app, "tasks.add", (1,), options={"priority": p}) for p in (1, True)]
    with pytest.raises(InvalidTaskSpec, match="priority"):
        group(signatures).apply_async(queue=IDLE)
