"""Celery-like log lines per task: received, succeeded in Xs: result, failed, retry, revoked.

They are INFO lines, logged only after the logging module's cheap ``isEnabledFor`` check: with
the worker at ``--loglevel warning`` a task costs a few comparisons here and builds no text. (A
failure's traceback is logged apart, by worker.execution, at ERROR when unexpected.)
"""

from __future__ import annotations

import logging
import time

from worker.jobs import Job, Outcome, OutcomeState

logger = logging.getLogger(__name__)

# A result is shown up to this many characters, as Celery shortens its own.
PREVIEW_CHARS = 80


def received(job: Job) -> None:
    """``Task tasks.add[id] received``."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("Task %s[%s] received", job.name, job.task_id, extra=_about(job))


def now() -> float | None:
    """A start time for :func:`finished`, read only when its line would be logged."""
    return time.perf_counter() if logger.isEnabledFor(logging.INFO) else None


def finished(job: Job, outcome: Outcome, started: float | None) -> None:
    """The outcome's line: succeeded (with a result preview), failed, retry or revoked.

    ``started`` is :func:`now` when the task started (None: the runtime is left out).
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    state = outcome.state
    if state is OutcomeState.SUCCESS:
        took = _took(started)
        logger.info(
            "Task %s[%s] succeeded%s: %s",
            job.name,
            job.task_id,
            took,
            _preview(outcome),
            extra=_about(job),
        )
    elif state is OutcomeState.FAILURE:
        took = _took(started)
        logger.info(
            "Task %s[%s] failed%s: %s",
            job.name,
            job.task_id,
            took,
            _error(outcome),
            extra=_about(job),
        )
    elif state is OutcomeState.RETRY:
        logger.info(
            "Task %s[%s] retry: %s", job.name, job.task_id, _error(outcome), extra=_about(job)
        )
    else:
        logger.info(
            "Task %s[%s] revoked: %s", job.name, job.task_id, _error(outcome), extra=_about(job)
        )


def _about(job: Job) -> dict[str, str]:
    """The task's id and name as record attributes (``--log-format json`` shows them)."""
    return {"task_id": job.task_id, "task_name": job.name}


def _took(started: float | None) -> str:
    return f" in {time.perf_counter() - started:.3f}s" if started is not None else ""


def _preview(outcome: Outcome) -> str:
    if outcome.result is None:
        return "(result not kept)"
    text = bytes(outcome.result.body[: PREVIEW_CHARS + 1]).decode("utf-8", "replace")
    text = text if text.isprintable() else repr(text)
    return text[:PREVIEW_CHARS] + "..." if len(text) > PREVIEW_CHARS else text


def _error(outcome: Outcome) -> str:
    error = outcome.error
    return f"{error.type}: {error.message}" if error is not None else "(no reason given)"
