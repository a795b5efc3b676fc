"""The broker's size limits at the worker: oversize results fail, Reports are split to fit."""

from __future__ import annotations

import pytest

from celeriac.v1 import worker_pb2
from client import serialization
from tests.worker import tasks_unit
from worker import codec
from worker.codec import ReportBatch
from worker.execution import ExecutionSettings, execute
from worker.jobs import (
    Heartbeat,
    Job,
    Outcome,
    OutcomeState,
    Payload,
    StateUpdate,
    TaskErrorInfo,
    TaskEvent,
)
from worker.limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    RESULT_TOO_LARGE,
    PayloadLimits,
    fit_event,
    fit_outcome,
)

TASKS = tasks_unit.app.tasks
SETTINGS = ExecutionSettings(hostname="celeriac@test:1")
MIB = 1024 * 1024


def job(name: str, *args: object, max_payload_bytes: int | None = None) -> Job:
    return Job(
        lease_id="lease-1",
        task_id="task-1",
        name="tests.worker.tasks_unit." + name,
        args=Payload(serialization.JSON, serialization.encode_args(args, {})),
        max_payload_bytes=max_payload_bytes,
    )


def ignore(event: TaskEvent) -> None:
    del event


def success(lease_id: str, size: int) -> Outcome:
    return Outcome(lease_id, OutcomeState.SUCCESS, result=Payload("application/json", b"x" * size))


# -- limits from the Welcome ---------------------------------------------------------------


def test_welcome_limits_default_to_the_brokers_when_it_sends_zero() -> None:
    old = codec.decode(worker_pb2.BrokerMessage(welcome=worker_pb2.Welcome(session_id="s")))
    assert isinstance(old, codec.Welcome)
    assert old.limits == PayloadLimits(DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_MESSAGE_BYTES)
    welcome = worker_pb2.Welcome(session_id="s", max_payload_bytes=500, max_message_bytes=9000)
    new = codec.decode(worker_pb2.BrokerMessage(welcome=welcome))
    assert isinstance(new, codec.Welcome)
    assert new.limits == PayloadLimits(500, 9000)


def test_assigned_jobs_carry_the_sessions_payload_limit() -> None:
    message = worker_pb2.BrokerMessage(
        assignments=worker_pb2.Assignments(tasks=[worker_pb2.Assignment(lease_id="l", name="t")])
    )
    event = codec.decode(message, 1234)
    assert isinstance(event, codec.Assign)
    assert event.jobs[0].max_payload_bytes == 1234


def test_the_largest_body_fits_in_one_message_even_when_the_payload_limit_is_higher() -> None:
    assert PayloadLimits(MIB, 4 * MIB).largest_body == MIB
    assert PayloadLimits(8 * MIB, 4 * MIB).largest_body < 4 * MIB


# -- results, states and errors ------------------------------------------------------------


def test_a_result_over_the_limit_fails_with_result_too_large_where_it_is_encoded() -> None:
    outcome = execute(job("big", 5000, max_payload_bytes=1000), TASKS, ignore, SETTINGS)
    assert outcome.state is OutcomeState.FAILURE
    assert outcome.result is None
    assert outcome.error is not None
    assert outcome.error.type == RESULT_TOO_LARGE
    assert not outcome.error.retryable
    assert "5,002 bytes" in outcome.error.message and "1,000 bytes" in outcome.error.message
    assert "reference" in outcome.error.message
    fits = execute(job("big", 10, max_payload_bytes=1000), TASKS, ignore, SETTINGS)
    assert fits.state is OutcomeState.SUCCESS


def test_the_runner_check_fails_an_oversize_result_whatever_the_pool_did() -> None:
    limits = PayloadLimits(1000, 64 * 1024)
    failed = fit_outcome(job("big"), success("lease-1", 1001), limits)
    assert failed.state is OutcomeState.FAILURE
    assert failed.error is not None and failed.error.type == RESULT_TOO_LARGE
    kept = success("lease-1", 1000)
    assert fit_outcome(job("big"), kept, limits) is kept


def test_oversize_error_text_is_cut_so_the_outcome_still_fits() -> None:
    limits = PayloadLimits(1000, 64 * 1024)
    error = TaskErrorInfo("ValueError", "m" * 100_000, "Traceback\n" + "t" * 100_000 + "\nEND")
    outcome = fit_outcome(job("big"), Outcome("lease-1", OutcomeState.FAILURE, error=error), limits)
    assert outcome.error is not None
    assert len(outcome.error.message) <= limits.max_error_chars
    assert len(outcome.error.traceback) <= limits.max_error_chars
    assert outcome.error.message.startswith("mmm") and "characters cut" in outcome.error.message
    assert outcome.error.traceback.endswith("t\nEND")  # the end of a traceback matters most


def test_oversize_custom_state_is_dropped_and_heartbeat_keeps_its_extension() -> None:
    events: list[TaskEvent] = []
    outcome = execute(
        job("reports_big", 5000, max_payload_bytes=1000), TASKS, events.append, SETTINGS
    )
    assert outcome.state is OutcomeState.SUCCESS
    assert events == [Heartbeat("lease-1", 10, None)]
    small = StateUpdate("lease-1", "PROGRESS", Payload("application/json", b"1"))
    assert fit_event(small, 1) is small
    assert fit_event(StateUpdate("l", "P", Payload("application/json", b"12")), 1) is None


# -- splitting Reports ---------------------------------------------------------------------


def test_a_small_batch_is_one_report() -> None:
    batch = ReportBatch(credit=3, started=["a"], outcomes=[success("a", 10)])
    (message,) = codec.reports(batch, 1000)
    assert message == codec.report(batch)


@pytest.mark.parametrize("limit", [4 * MIB, 1_500_000])
def test_many_large_outcomes_are_split_into_reports_under_the_message_limit(limit: int) -> None:
    outcomes = [success(f"lease-{i}", MIB - 2000) for i in range(9)]
    heartbeat = Heartbeat("lease-h", 5.0, Payload("application/json", b"p" * 200_000))
    batch = ReportBatch(
        credit=7,
        started=[f"lease-{i}" for i in range(9)],
        outcomes=outcomes,
        heartbeats=[heartbeat],
        state_updates=[StateUpdate("lease-s", "P", Payload("application/json", b"s" * 300_000))],
        returned=["lease-r"],
        withdraw_credit=True,
    )
    messages = codec.reports(batch, limit)
    assert len(messages) > 1
    assert all(m.ByteSize() <= limit for m in messages)
    reports = [m.report for m in messages]
    # Nothing lost, nothing repeated, outcomes in order.
    sent = [o.lease_id for r in reports for o in r.outcomes]
    assert sent == [o.lease_id for o in outcomes]
    assert [e.lease_id for r in reports for e in r.extensions] == ["lease-h"]
    assert [u.lease_id for r in reports for u in r.state_updates] == ["lease-s"]
    # Starts travel first; credit, its withdrawal and hand-backs last, as from one Report.
    assert list(reports[0].started_lease_ids) == batch.started
    assert all(not r.started_lease_ids for r in reports[1:])
    assert (reports[-1].credit, reports[-1].withdraw_credit) == (7, True)
    assert list(reports[-1].returned_lease_ids) == ["lease-r"]
    assert all(r.credit == 0 and not r.withdraw_credit for r in reports[:-1])
