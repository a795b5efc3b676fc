"""The edge codec: every core field reaches the wire, and large batches split under a budget."""

from __future__ import annotations

from broker.core.model import (
    Assignment,
    Cancel,
    Payload,
    TaskError,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from broker.core.sessions import Outbox
from broker.service import codec
from celeriac.v1 import tasks_pb2, worker_pb2

ARGS = Payload("application/json", b"[[1, 2], {}]")


def full_spec() -> TaskSpec:
    return TaskSpec(
        name="tasks.add",
        task_id="t-1",
        queue="fast",
        args=ARGS,
        headers={"trace": "abc"},
        priority=7,
        eta=1_700_000_000.25,
        expires=1_700_000_100.5,
        time_limit_ms=3_000,
        soft_time_limit_ms=2_000,
        ignore_result=True,
        max_retries=0,
    )


def test_an_assignment_carries_every_field_of_its_task() -> None:
    record = TaskRecord("t-1", full_spec())
    record.retries = 2
    message = worker_pb2.Assignment()
    codec.write_assignment(message, Assignment("lease-1", 3, record))
    wire = worker_pb2.Assignment.FromString(message.SerializeToString())
    assert (wire.lease_id, wire.task_id, wire.attempt, wire.retries) == ("lease-1", "t-1", 3, 2)
    assert (wire.name, wire.queue, wire.priority) == ("tasks.add", "fast", 7)
    assert (wire.time_limit_ms, wire.soft_time_limit_ms, wire.ignore_result) == (3000, 2000, True)
    assert dict(wire.headers) == {"trace": "abc"}
    assert (wire.args.content_type, wire.args.body) == (ARGS.content_type, ARGS.body)
    assert (wire.eta.seconds, wire.eta.nanos) == (1_700_000_000, 250_000_000)
    assert (wire.expires.seconds, wire.expires.nanos) == (1_700_000_100, 500_000_000)
    assert wire.HasField("max_retries") and wire.max_retries == 0


def test_an_assignment_leaves_unset_options_unset() -> None:
    record = TaskRecord("t-2", TaskSpec(name="tasks.noop"))
    message = worker_pb2.Assignment()
    codec.write_assignment(message, Assignment("lease-2", 1, record))
    assert not message.HasField("args")
    assert not message.HasField("eta") and not message.HasField("expires")
    assert not message.HasField("max_retries")


def test_a_result_carries_every_field_of_its_record() -> None:
    record = TaskRecord("t-1", full_spec())
    record.state = TaskState.FAILURE
    record.custom_state = "HALFWAY"
    record.retries, record.attempts = 1, 2
    record.worker_id = "w@host:1"
    record.dead_lettered = True
    record.result = Payload("application/json", b"42")
    record.progress = Payload("application/json", b'{"done": 3}')
    record.error = TaskError("ValueError", "bad", "Traceback ...", retryable=True)
    record.date_done = 1_700_000_200.75
    record.due = 1_700_000_300.0
    wire = tasks_pb2.TaskResult.FromString(codec.result_to_pb(record).SerializeToString())
    assert (wire.task_id, wire.state) == ("t-1", tasks_pb2.TASK_STATE_FAILURE)
    assert (wire.name, wire.queue, wire.custom_state) == ("tasks.add", "fast", "HALFWAY")
    assert (wire.retries, wire.attempts, wire.worker_id) == (1, 2, "w@host:1")
    assert wire.dead_lettered
    assert (wire.result.body, wire.progress.body) == (b"42", b'{"done": 3}')
    assert (wire.error.type, wire.error.message, wire.error.retryable) == (
        "ValueError",
        "bad",
        True,
    )
    assert (wire.date_done.seconds, wire.date_done.nanos) == (1_700_000_200, 750_000_000)
    assert wire.eta.seconds == 1_700_000_300


def test_fill_within_stops_before_the_budget_and_resumes_where_it_stopped() -> None:
    ids = [f"lease-{index:04d}" for index in range(100)]

    def write(message: worker_pb2.LeaseRejection, lease_id: str) -> None:
        message.lease_id = lease_id

    parts: list[list[str]] = []
    done = 0
    while done < len(ids):
        part = worker_pb2.LeaseRejections()
        done = codec.fill_within(part.rejections, ids, done, write, budget=200)
        assert part.ByteSize() <= 200
        parts.append([rejection.lease_id for rejection in part.rejections])
    assert len(parts) > 1
    assert [lease_id for part in parts for lease_id in part] == ids


def test_fill_within_always_takes_one_item_even_when_it_is_over_budget() -> None:
    part = worker_pb2.LeaseRejections()

    def write(message: worker_pb2.LeaseRejection, reason: str) -> None:
        message.reason = reason

    assert codec.fill_within(part.rejections, ["x" * 500, "y"], 0, write, budget=100) == 1
    assert len(part.rejections) == 1


def test_an_outbox_splits_assignments_and_rejections_by_size() -> None:
    outbox = Outbox()
    records = [
        TaskRecord(f"t-{index}", TaskSpec(name="tasks.add", args=ARGS)) for index in range(50)
    ]
    outbox.assignments = [Assignment(f"lease-{r.task_id}", 1, r) for r in records]
    outbox.rejections = [(f"bogus-{index}", "not held") for index in range(50)]
    messages = codec.outbox_to_pb(outbox, max_message_bytes=1_000)
    assert all(message.ByteSize() <= 1_000 for message in messages)
    assigned = [
        t.task_id for m in messages if m.HasField("assignments") for t in m.assignments.tasks
    ]
    rejected = [
        r.lease_id for m in messages if m.HasField("rejections") for r in m.rejections.rejections
    ]
    assert assigned == [r.task_id for r in records]
    assert rejected == [f"bogus-{index}" for index in range(50)]


def test_a_cancel_of_many_leases_splits_by_size_and_keeps_its_kind() -> None:
    outbox = Outbox()
    lease_ids = [f"lease-{index:04d}" for index in range(200)]
    outbox.cancels = [Cancel(lease_ids, terminate=True, reason="revoked by the operator")]
    messages = codec.outbox_to_pb(outbox, max_message_bytes=500)
    assert len(messages) > 1
    assert all(message.ByteSize() <= 500 for message in messages)
    assert [i for m in messages for i in m.cancel.lease_ids] == lease_ids
    reason = "revoked by the operator"
    assert all(m.cancel.terminate and m.cancel.reason == reason for m in messages)
