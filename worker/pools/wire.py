"""Jobs and outcomes as plain tuples, for the pipes between the process pool and its children.

Pickle writes a dataclass as its class plus a dict of its fields, and reads it back by building
the object without ``__init__`` and setting each field: 7-9 µs for a `Job` or an `Outcome` each
way, warm. The same fields as a tuple of strings, numbers and bytes pickle in about 1.3 µs and
are rebuilt in about 1 µs. A round trip sends one job down and one outcome up, and runs this code
on processes that have just woken (2-4 times slower than warm), so the tuples take some 50 µs
off it. Task events (`update_state`, heartbeats) are rare and still travel as dataclasses.

The tuples are an internal format between a worker and the children it started from the same
code, never stored or sent elsewhere: fields are positional, and both ends change together.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

from worker.jobs import Job, Outcome, OutcomeState, ParentResult, Payload, TaskErrorInfo

PayloadWire: TypeAlias = tuple[str, bytes] | None
JobWire: TypeAlias = tuple[
    str,  # lease_id
    str,  # task_id
    str,  # name
    str,  # args content type
    bytes,  # args body
    int,  # attempt
    int,  # retries
    str,  # queue
    dict[str, str],  # headers
    datetime | None,  # eta
    datetime | None,  # expires
    float | None,  # time_limit
    float | None,  # soft_time_limit
    bool,  # ignore_result
    int,  # priority
    int | None,  # max_retries
    int | None,  # max_payload_bytes
    str,  # dependency_mode
    tuple[ParentResult, ...],  # parents (rare: pickled as they are)
]
ErrorWire: TypeAlias = tuple[str, str, str, bool] | None
OutcomeWire: TypeAlias = tuple[
    str,  # lease_id
    str,  # state (OutcomeState value)
    PayloadWire,  # result
    ErrorWire,  # error
    float | None,  # retry_countdown
    datetime | None,  # retry_eta
    int | None,  # max_retries
    str,  # replaced_by
]

_STATES = {state.value: state for state in OutcomeState}


def job_to_wire(job: Job) -> JobWire:
    """The job's fields, in `Job`'s order, with its arguments flattened."""
    return (
        job.lease_id,
        job.task_id,
        job.name,
        job.args.content_type,
        job.args.body,
        job.attempt,
        job.retries,
        job.queue,
        dict(job.headers),
        job.eta,
        job.expires,
        job.time_limit,
        job.soft_time_limit,
        job.ignore_result,
        job.priority,
        job.max_retries,
        job.max_payload_bytes,
        job.dependency_mode,
        job.parents,
    )


def name_of(wire: JobWire) -> str:
    """The task name of a flattened job, without rebuilding it."""
    return wire[2]


def job_from_wire(wire: JobWire) -> Job:
    """The `Job` that `job_to_wire` flattened."""
    return Job(wire[0], wire[1], wire[2], Payload(wire[3], wire[4]), *wire[5:])


def outcome_to_wire(outcome: Outcome) -> OutcomeWire:
    """The outcome's fields, with its state as its value and its parts as tuples."""
    result, error = outcome.result, outcome.error
    return (
        outcome.lease_id,
        outcome.state.value,
        None if result is None else (result.content_type, result.body),
        None if error is None else (error.type, error.message, error.traceback, error.retryable),
        outcome.retry_countdown,
        outcome.retry_eta,
        outcome.max_retries,
        outcome.replaced_by,
    )


def outcome_from_wire(wire: OutcomeWire) -> Outcome:
    """The `Outcome` that `outcome_to_wire` flattened."""
    lease_id, state, result, error, countdown, eta, max_retries, replaced_by = wire
    return Outcome(
        lease_id,
        _STATES[state],
        None if result is None else Payload(*result),
        None if error is None else TaskErrorInfo(*error),
        countdown,
        eta,
        max_retries,
        replaced_by,
    )
