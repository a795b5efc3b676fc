"""Every stored task error has a language-neutral kind: set by the worker, or classified."""

from __future__ import annotations

import pytest

from broker.core.model import ErrorKind, Phase, TaskError, TaskRecord, TaskState, classify
from broker.journal.rows import StoredTask, decode, encode
from broker.service import codec
from celeriac.v1 import tasks_pb2
from tests.broker.core_support import spec


@pytest.mark.parametrize(
    ("type_name", "kind"),
    [
        ("client.errors.TimeLimitExceeded", ErrorKind.TIMEOUT),
        ("TimeLimitExceeded", ErrorKind.TIMEOUT),  # the broker's own lease deadline
        ("client.errors.SoftTimeLimitExceeded", ErrorKind.TIMEOUT),
        ("TaskRevoked", ErrorKind.REVOKED),
        ("TaskExpired", ErrorKind.EXPIRED),
        ("client.errors.TaskExpired", ErrorKind.EXPIRED),
        ("WorkerLost", ErrorKind.WORKER_LOST),
        ("worker.errors.WorkerLostError", ErrorKind.WORKER_LOST),
        ("client.errors.NotRegistered", ErrorKind.NOT_REGISTERED),
        ("client.errors.SerializationError", ErrorKind.SERIALIZATION),
        ("ResultTooLarge", ErrorKind.RESULT_TOO_LARGE),
        ("builtins.ZeroDivisionError", ErrorKind.USER_ERROR),
        ("myapp.errors.PaymentDeclined", ErrorKind.USER_ERROR),
    ],
)
def test_errors_without_a_kind_are_classified_by_type(type_name: str, kind: ErrorKind) -> None:
    assert classify(type_name) is kind
    assert TaskError(type_name, "m").kind is kind


def test_the_wire_carries_the_kind_and_a_workers_own_kind_wins() -> None:
    from_worker = tasks_pb2.TaskError(
        type="node.RangeError", message="x", kind=tasks_pb2.TASK_ERROR_KIND_TIMEOUT
    )
    assert codec.error_from_pb(from_worker).kind is ErrorKind.TIMEOUT
    unset = tasks_pb2.TaskError(type="client.errors.NotRegistered", message="x")
    assert codec.error_from_pb(unset).kind is ErrorKind.NOT_REGISTERED
    sent = codec.error_to_pb(TaskError("builtins.KeyError", "k"))
    assert sent.kind == tasks_pb2.TASK_ERROR_KIND_USER_ERROR


def test_the_journal_keeps_the_kind_and_reads_rows_written_before_it() -> None:
    record = TaskRecord("t1", spec())
    record.phase, record.state = Phase.FINISHED, TaskState.FAILURE
    record.error = TaskError("node.RangeError", "too far", kind=ErrorKind.TIMEOUT)
    row = encode(record, lambda _: 0.0)
    assert row.spec is not None
    back = decode(StoredTask("t1", row.spec, None, None, None, row.state))
    assert back.error == record.error
    older = row.state.replace(',"timeout"]', "]")  # a row from before the kind was kept
    assert older != row.state
    legacy = decode(StoredTask("t1", row.spec, None, None, None, older))
    assert legacy.error is not None and legacy.error.kind is ErrorKind.USER_ERROR
