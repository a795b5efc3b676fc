"""The worker's execution semantics, one job at a time, with no broker and no pool."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from datetime import UTC, datetime, timedelta

import pytest

from client import serialization, signals
from client.context import Request
from client.task import Task
from tests.worker import tasks_unit
from worker.execution import ExecutionSettings, decide_failure, execute, execute_async, lost_outcome
from worker.jobs import Heartbeat, Job, OutcomeState, Payload, StateUpdate, TaskEvent

TASKS = tasks_unit.app.tasks
SETTINGS = ExecutionSettings(hostname="celeriac@test:1")
PREFIX = "tests.worker.tasks_unit."


def job(name: str, *args: object, retries: int = 0, **fields: object) -> Job:
    body = serialization.encode_args(args, {})
    return Job(
        lease_id="lease-1",
        task_id="task-1",
        name=PREFIX + name,
        args=Payload(serialization.JSON, body),
        retries=retries,
        **fields,  # type: ignore[arg-type]
    )


def run(j: Job, events: list[TaskEvent] | None = None, now: datetime | None = None):  # type: ignore[no-untyped-def]
    sink = (events if events is not None else []).append
    return execute(j, TASKS, sink, SETTINGS, now=now)


def test_success_encodes_the_return_value() -> None:
    outcome = run(job("add", 2, 3))
    assert outcome.state is OutcomeState.SUCCESS
    assert outcome.result == Payload(serialization.JSON, b"5")


def test_async_task_is_awaited_on_a_fresh_loop() -> None:
    assert run(job("async_add", 2, 5)).result == Payload(serialization.JSON, b"7")


def test_execute_async_awaits_coroutines_and_threads_sync_tasks() -> None:
    async def both() -> list[object]:
        first = await execute_async(job("async_add", 1, 1), TASKS, lambda e: None, SETTINGS)
        second = await execute_async(job("add", 1, 2), TASKS, lambda e: None, SETTINGS)
        return [first.result, second.result]

    assert asyncio.run(both()) == [
        Payload(serialization.JSON, b"2"),
        Payload(serialization.JSON, b"3"),
    ]


def test_bound_task_sees_its_request() -> None:
    outcome = run(job("whoami", retries=2, queue="q1"))
    assert outcome.result is not None
    assert serialization.decode(outcome.result.body, serialization.JSON) == {
        "id": "task-1",
        "retries": 2,
        "queue": "q1",
    }


def test_exception_becomes_failure_with_type_message_and_traceback() -> None:
    outcome = run(job("fail", "boom"))
    assert outcome.state is OutcomeState.FAILURE and outcome.error is not None
    assert outcome.error.type == "builtins.ValueError"
    assert outcome.error.message == "boom"
    assert "raise ValueError(message)" in outcome.error.traceback
    assert outcome.error.retryable


def test_unknown_task_fails_with_not_registered() -> None:
    outcome = run(job("no_such_task"))
    assert outcome.state is OutcomeState.FAILURE and outcome.error is not None
    assert outcome.error.type == "client.errors.NotRegistered"
    assert "no_such_task" in outcome.error.message


def test_non_serialisable_result_fails_clearly() -> None:
    outcome = run(job("returns_a_set"))
    assert outcome.state is OutcomeState.FAILURE and outcome.error is not None
    assert outcome.error.type == "client.errors.SerializationError"
    assert "set" in outcome.error.message


def test_pickled_arguments_are_refused_unless_allowed() -> None:
    body = serialization.encode_args((1, 2), {}, serialization.PICKLE, allow_pickle=True)
    pickled = job("add")
    pickled = dataclasses.replace(pickled, args=Payload(serialization.PICKLE, body))
    refused = run(pickled)
    assert refused.error is not None and refused.error.type == "client.errors.ContentTypeRefused"
    allowed = execute(pickled, TASKS, lambda e: None, ExecutionSettings("w", allow_pickle=True))
    assert allowed.state is OutcomeState.SUCCESS


def test_an_expired_job_is_revoked_without_running() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    outcome = run(job("add", 1, 1, expires=now - timedelta(seconds=1)), now=now)
    assert outcome.state is OutcomeState.REVOKED and outcome.error is not None
    assert outcome.error.type == "client.errors.TaskExpired"
    assert (
        run(job("add", 1, 1, expires=now + timedelta(seconds=1)), now=now).state
        is OutcomeState.SUCCESS
    )


def test_an_expired_job_sends_task_revoked_with_expired_true() -> None:
    heard: list[dict[str, object]] = []

    def receiver(**arguments: object) -> None:
        heard.append(arguments)

    signals.task_revoked.connect(receiver)
    try:
        now = datetime(2030, 1, 1, tzinfo=UTC)
        run(job("add", 1, 1, expires=now - timedelta(seconds=1), queue="q", attempt=2), now=now)
    finally:
        signals.task_revoked.disconnect(receiver)
    [sent] = heard
    assert sent["sender"] is TASKS[PREFIX + "add"]
    assert (sent["terminated"], sent["signum"], sent["expired"]) == (False, None, True)
    request = sent["request"]
    assert isinstance(request, Request) and request.id == "task-1"
    assert request.delivery_info == {
        "exchange": "",
        "routing_key": "q",
        "priority": 0,
        "redelivered": True,
    }


def test_autoretry_asks_for_a_retry_with_the_task_delay_and_limit() -> None:
    outcome = run(job("flaky", "reset"))
    assert outcome.state is OutcomeState.RETRY and outcome.error is not None
    assert outcome.retry_countdown == 7
    assert outcome.max_retries == 2
    assert outcome.error.type == "builtins.ConnectionError"


def test_autoretry_exhausted_fails_with_the_original_error() -> None:
    outcome = run(job("flaky", "reset", retries=2))
    assert outcome.state is OutcomeState.FAILURE and outcome.error is not None
    assert outcome.error.type == "builtins.ConnectionError"


def test_per_call_max_retries_overrides_the_task_option() -> None:
    assert run(job("flaky", "reset", retries=2, max_retries=5)).state is OutcomeState.RETRY
    assert run(job("flaky", "reset", retries=0, max_retries=0)).state is OutcomeState.FAILURE


def test_non_retryable_errors_fail_at_once_and_say_so() -> None:
    outcome = run(job("flaky", "refused"))
    assert outcome.state is OutcomeState.FAILURE and outcome.error is not None
    assert outcome.error.type == "builtins.ConnectionRefusedError"
    assert not outcome.error.retryable


def test_backoff_countdown_stays_within_jittered_bounds() -> None:
    task = TASKS[PREFIX + "backs_off"]
    for retries, cap in [(0, 2.0), (1, 4.0), (2, 5.0), (10, 5.0)]:
        outcome = run(job("backs_off", retries=retries))
        assert outcome.state is OutcomeState.RETRY
        assert outcome.max_retries is None  # retry forever
        assert outcome.retry_countdown is not None and 0 <= outcome.retry_countdown <= cap
        assert 0 <= task.retry_delay_for(retries, rng=random.Random(retries)) <= cap


def test_explicit_retry_uses_its_countdown_then_reports_exc_when_exhausted() -> None:
    first = run(job("explicit_retry"))
    assert first.state is OutcomeState.RETRY and first.retry_countdown == 3
    assert first.error is not None and first.error.type == "builtins.KeyError"
    last = run(job("explicit_retry", retries=1))
    assert last.state is OutcomeState.FAILURE and last.error is not None
    assert last.error.type == "builtins.KeyError"


def test_task_events_are_encoded_and_forwarded() -> None:
    events: list[TaskEvent] = []
    assert run(job("reports"), events).state is OutcomeState.SUCCESS
    assert events == [
        StateUpdate("lease-1", "PROGRESS", Payload(serialization.JSON, b'{"done":1}')),
        Heartbeat("lease-1", 10, Payload(serialization.JSON, b"0.5")),
    ]


def test_lost_child_retries_at_once_until_the_limit() -> None:
    again = lost_outcome(job("add", retries=0), TASKS, "killed by SIGKILL")
    assert again.state is OutcomeState.RETRY and again.retry_countdown == 0
    assert again.error is not None and again.error.type == "worker.errors.WorkerLostError"
    final = lost_outcome(job("add", retries=3), TASKS, "killed by SIGKILL")
    assert final.state is OutcomeState.FAILURE


def test_decide_failure_of_a_plain_error_without_autoretry_is_failure() -> None:
    task: Task = TASKS[PREFIX + "add"]
    outcome = decide_failure(job("add"), task, RuntimeError("x"))
    assert outcome.state is OutcomeState.FAILURE


def test_class_based_hooks_see_each_outcome_with_the_request_current() -> None:
    tasks_unit.Recording.calls.clear()
    assert run(job("hooked", 4)).state is OutcomeState.SUCCESS
    assert tasks_unit.Recording.calls == [
        ("on_success", "8", "task-1", "task-1"),
        ("after_return", "SUCCESS", "8"),
    ]
    tasks_unit.Recording.calls.clear()
    failed = run(job("hooked", -1, retries=1))  # max_retries = 1 on the class: no retry left
    assert failed.state is OutcomeState.FAILURE
    name, exc, task_id, traceback = tasks_unit.Recording.calls[0]
    assert (name, exc, task_id) == ("on_failure", "ValueError('negative')", "task-1")
    assert "raise ValueError" in traceback
    assert tasks_unit.Recording.calls[1] == ("after_return", "FAILURE", "ValueError('negative')")


def test_on_retry_runs_for_an_autoretry_and_retry_kwargs_set_its_countdown() -> None:
    tasks_unit.Recording.calls.clear()
    outcome = run(job("hooked_retrying"))
    assert outcome.state is OutcomeState.RETRY and outcome.retry_countdown == 7
    assert [call[0] for call in tasks_unit.Recording.calls] == ["on_retry", "after_return"]


def test_retry_kwargs_max_retries_bound_the_autoretries() -> None:
    first = run(job("retries_per_kwargs"))
    assert (first.state, first.retry_countdown, first.max_retries) == (OutcomeState.RETRY, 3, 1)
    assert run(job("retries_per_kwargs", retries=1)).state is OutcomeState.FAILURE


def test_a_hook_that_raises_is_logged_and_the_outcome_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome = run(job("broken_hooks"))
    assert outcome.state is OutcomeState.SUCCESS
    assert outcome.result == Payload(serialization.JSON, b'"fine"')
    assert "a hook of task" in caplog.text and "a hook that breaks" in caplog.text


def test_expected_errors_are_logged_in_one_line_and_others_with_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.execution")
    assert run(job("fails_as_expected")).state is OutcomeState.FAILURE
    assert run(job("fail", "boom")).state is OutcomeState.FAILURE
    expected, unexpected = [r for r in caplog.records if r.name == "worker.execution"]
    assert expected.levelno == logging.INFO and expected.exc_info is None
    assert "raised expected: Expected('card declined')" in expected.getMessage()
    assert unexpected.levelno == logging.ERROR and unexpected.exc_info is not None
    assert "raised unexpected: ValueError('boom')" in unexpected.getMessage()
