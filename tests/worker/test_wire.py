"""The tuples that carry jobs and outcomes over the process pool's pipes keep every field."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime

from worker.jobs import Job, Outcome, OutcomeState, ParentResult, Payload, TaskErrorInfo
from worker.pools.wire import job_from_wire, job_to_wire, outcome_from_wire, outcome_to_wire

MOMENT = datetime(2026, 12, 2, 4, 30, tzinfo=UTC)


def _distinct_job() -> Job:
    """A job whose every field differs from its default, so a dropped field shows."""
    return Job(
        lease_id="lease",
        task_id="task",
        name="tasks.add",
        args=Payload("application/json", b"[[1, 2], {}]"),
        attempt=3,
        retries=2,
        queue="math",
        headers={"traceparent": "00-abc-def-01"},
        eta=MOMENT,
        expires=MOMENT.replace(hour=5),
        time_limit=30.0,
        soft_time_limit=20.0,
        ignore_result=True,
        priority=7,
        max_retries=5,
        max_payload_bytes=1024,
        dependency_mode="results",
        parents=(
            ParentResult("parent", "tasks.add", Payload("application/json", b"3")),
            ParentResult("failed", "tasks.add", error=TaskErrorInfo("ValueError", "boom")),
        ),
    )


def _through_pipe(value: object) -> object:
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


def test_a_job_keeps_every_field() -> None:
    job = _distinct_job()
    defaults = Job("", "", "", Payload("", b""))
    for field in dataclasses.fields(Job):
        assert getattr(job, field.name) != getattr(defaults, field.name), field.name
    assert job_from_wire(_through_pipe(job_to_wire(job))) == job  # type: ignore[arg-type]


def test_outcomes_keep_every_field() -> None:
    outcomes = [
        Outcome("lease", OutcomeState.SUCCESS, result=Payload("application/json", b"3")),
        Outcome("lease", OutcomeState.SUCCESS, replaced_by="replacement"),
        Outcome(
            "lease",
            OutcomeState.RETRY,
            error=TaskErrorInfo("builtins.IOError", "disk", "Traceback ...", retryable=True),
            retry_countdown=1.5,
            retry_eta=MOMENT,
            max_retries=4,
        ),
        Outcome(
            "lease",
            OutcomeState.FAILURE,
            error=TaskErrorInfo("builtins.ValueError", "bad", "", retryable=False),
        ),
        Outcome("lease", OutcomeState.REVOKED),
    ]
    # Between them the outcomes set every field (and every error field) to something other
    # than its default, so a field the wire forgot would show.
    bare, bare_error = Outcome("", OutcomeState.SUCCESS), TaskErrorInfo("", "")
    for field in dataclasses.fields(Outcome):
        assert any(getattr(o, field.name) != getattr(bare, field.name) for o in outcomes), field
    errors = [o.error for o in outcomes if o.error is not None]
    for field in dataclasses.fields(TaskErrorInfo):
        assert any(getattr(e, field.name) != getattr(bare_error, field.name) for e in errors)
    for outcome in outcomes:
        back = outcome_from_wire(_through_pipe(outcome_to_wire(outcome)))  # type: ignore[arg-type]
        assert back == outcome
        assert back.state is outcome.state
