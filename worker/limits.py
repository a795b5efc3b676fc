"""What the broker stores and accepts, and how the worker keeps what it reports within that.

The broker's Welcome names two limits: `max_payload_bytes`, the largest Payload body it stores
(results, custom-state meta, heartbeat progress), and `max_message_bytes`, gRPC's limit on one
message. A WorkerMessage over the second does not just fail: gRPC ends the worker's whole session
stream, every task of the worker waits for the reconnect, and an unconfirmed outcome is sent
again and ends the next session too. So nothing oversize may reach a Report:

* A result over the limit makes the attempt FAILURE with error type `ResultTooLarge` (the name
  the broker itself uses), never retried; the result is dropped. Big data belongs in external
  storage, with a reference returned.
* A custom state (`self.update_state`) whose meta is over the limit is dropped with a warning,
  and the task runs on: progress is advisory, and failing a long task for it would lose work.
* A heartbeat whose progress is over the limit loses the progress (warning) but keeps its lease
  extension, which dropping would turn into a time-limit backstop and a second run.
* An error's message and traceback are each cut to `PayloadLimits.max_error_chars`.

The checks run where results are encoded (`worker.execution`, inside a process-pool child, so a
huge body never crosses the pipe only to be dropped) with the limit the job carries, and again
in the runner before anything is buffered for the broker, whatever the pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from worker.jobs import Heartbeat, Job, Outcome, OutcomeState, TaskErrorInfo, TaskEvent

logger = logging.getLogger(__name__)

# The broker's defaults, used before its Welcome arrives and when it sends 0 (an older broker).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Room around one body in a Report: lease id, content type, field tags and lengths.
ENVELOPE_BYTES = 1024
# The error type of an attempt whose result is too large (the broker uses the same name).
RESULT_TOO_LARGE = "ResultTooLarge"
# An error's message and traceback are cut to this many characters each (at most).
MAX_ERROR_CHARS = 64 * 1024


@dataclass(frozen=True)
class PayloadLimits:
    """The broker's limits, as its Welcome gave them (or its defaults)."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES

    @classmethod
    def from_welcome(cls, max_payload_bytes: int, max_message_bytes: int) -> PayloadLimits:
        """The limits a Welcome announces; a 0 (not announced) means the broker's default."""
        return cls(
            max_payload_bytes or DEFAULT_MAX_PAYLOAD_BYTES,
            max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES,
        )

    @property
    def largest_body(self) -> int:
        """The largest payload body to report: stored by the broker AND fits in one message."""
        return max(0, min(self.max_payload_bytes, self.max_message_bytes - ENVELOPE_BYTES))

    @property
    def max_error_chars(self) -> int:
        """How long an error's message or traceback may be, in characters.

        A character is at most 4 bytes of UTF-8, so both texts together take at most half of a
        message even when the broker's message limit is small.
        """
        return min(MAX_ERROR_CHARS, self.max_message_bytes // 16)


def result_too_large(job: Job, size: int, limit: int) -> Outcome:
    """The FAILURE of an attempt whose encoded result is `size` bytes, over `limit`."""
    message = (
        f"the result of task {job.name}[{job.task_id}] is {size:,} bytes encoded, over the "
        f"broker's limit of {limit:,} bytes (max_payload_bytes); the result was dropped. Keep "
        "large data in external storage (a file, object store or database) and return a "
        "reference to it"
    )
    logger.error("task failed id=%s name=%s: %s", job.task_id, job.name, message)
    error = TaskErrorInfo(type=RESULT_TOO_LARGE, message=message, retryable=False)
    return Outcome(lease_id=job.lease_id, state=OutcomeState.FAILURE, error=error)


def check_result(job: Job, outcome: Outcome, limit: int) -> Outcome:
    """The outcome, or a `ResultTooLarge` failure when its result body is over `limit`."""
    result = outcome.result
    if result is None or len(result.body) <= limit:
        return outcome
    return result_too_large(job, len(result.body), limit)


def fit_outcome(job: Job, outcome: Outcome, limits: PayloadLimits) -> Outcome:
    """The outcome made reportable: no result over the limit, no error text over its cap."""
    outcome = check_result(job, outcome, limits.largest_body)
    error = outcome.error
    if error is None:
        return outcome
    chars = limits.max_error_chars
    if len(error.message) <= chars and len(error.traceback) <= chars:
        return outcome
    shorter = replace(
        error,
        message=_shorten(error.message, chars),
        # A traceback's end says the most: the innermost frames and the exception line.
        traceback=_shorten(error.traceback, chars, keep_end=True),
    )
    return replace(outcome, error=shorter)


def fit_event(event: TaskEvent, limit: int) -> TaskEvent | None:
    """The event made reportable: None for an oversize custom state, no oversize progress.

    Args:
        event: A running task's custom state or heartbeat.
        limit: The largest payload body to report.

    Returns:
        The event as it is when its payload fits; a heartbeat without its progress (the lease
        extension still matters); None for a custom state whose meta is too large.
    """
    if isinstance(event, Heartbeat):
        progress = event.progress
        if progress is None or len(progress.body) <= limit:
            return event
        logger.warning(
            "dropping heartbeat progress of lease=%s: %s bytes encoded, over the broker's limit "
            "of %s bytes (max_payload_bytes); the lease extension still goes",
            event.lease_id,
            f"{len(progress.body):,}",
            f"{limit:,}",
        )
        return replace(event, progress=None)
    if len(event.meta.body) <= limit:
        return event
    logger.warning(
        "dropping custom state %s of lease=%s: its meta is %s bytes encoded, over the broker's "
        "limit of %s bytes (max_payload_bytes)",
        event.state,
        event.lease_id,
        f"{len(event.meta.body):,}",
        f"{limit:,}",
    )
    return None


# Room for the note that says how much was cut.
_CUT_NOTE_CHARS = 64


def _shorten(text: str, chars: int, *, keep_end: bool = False) -> str:
    """`text` cut to at most `chars` characters, with a note saying how much went."""
    if len(text) <= chars:
        return text
    keep = max(0, chars - _CUT_NOTE_CHARS)
    note = f"[... {len(text) - keep:,} characters cut by the worker ...]"
    if keep_end:
        return note + "\n" + text[len(text) - keep :]
    return text[:keep] + "\n" + note
