"""Batch calls in pieces: group chunks, id slices, calls in flight, what a failed chunk means.

A group goes to the broker as one ``SubmitMany`` per chunk, several at once; a chunk is cut by
count and by size, so that no call is over the broker's message limit. Each chunk is accepted
all or nothing; when one fails, the error must say which tasks the broker holds. Revoke and
forget of many ids go in slices for the same reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from client.errors import CeleriacError
from client.records import ResolvedOptions, SubmitSpec

T = TypeVar("T")

# SubmitMany calls a group keeps open at once: two let the client encode one chunk while the
# broker accepts the other; a third keeps the broker busy while an answer travels back.
SUBMIT_WINDOW = 3
# Bytes a task takes in a SubmitMany besides its argument body, id and text options: the
# numeric and time fields at their largest, and the framing of the task and its arguments.
_TASK_FIXED_BYTES = 128
# Room for the request's own framing within the broker's message limit.
_REQUEST_FRAME_BYTES = 1024
# Task ids per Revoke or Forget call: ~400 kB of ids, far under any message limit a broker
# sets (a 120k-task group revoked in one call was over the default 4 MiB).
IDS_PER_CALL = 10_000


def id_slices(task_ids: Sequence[str]) -> Iterator[Sequence[str]]:
    """``task_ids`` in the slices one Revoke or Forget call carries, in order."""
    for start in range(0, len(task_ids), IDS_PER_CALL):
        yield task_ids[start : start + IDS_PER_CALL]


def group_chunks(
    specs: Sequence[SubmitSpec], count: int, max_message_bytes: int
) -> Iterator[Sequence[SubmitSpec]]:
    """The SubmitMany chunks of a group: at most ``count`` tasks, and small enough to send.

    The broker refuses a whole call whose message is over its limit, so a group of large tasks
    (a thousand 20 kB arguments make 20 MB) is cut by size as well as by count. The size is an
    upper bound, not an encoding: encoding twice would cost the batch path most of its speed. A
    task too large for any message still travels, alone, and the broker's refusal names it.
    ``max_message_bytes`` 0 (a broker that does not say) cuts by count only.
    """
    budget = max_message_bytes - _REQUEST_FRAME_BYTES if max_message_bytes > 0 else 0
    options_bytes: dict[int, int] = {}  # by id(): the specs keep their options alive
    start = used = 0
    for index, spec in enumerate(specs):
        cost = len(spec.args.body) + len(spec.task_id)
        if budget:
            shared = options_bytes.get(id(spec.options))
            if shared is None:
                shared = options_bytes[id(spec.options)] = _options_bytes(spec.options)
            cost += shared
        if index > start and (index - start == count or (budget and used + cost > budget)):
            yield specs[start:index]
            start, used = index, 0
        used += cost
    if start < len(specs):
        yield specs[start:]


def _options_bytes(options: ResolvedOptions) -> int:
    """An upper bound on what a task's options add to it on the wire (each task carries them)."""
    text = (options.name, options.queue, options.idempotency_key, options.content_type)
    headers = sum(len(k.encode()) + len(v.encode()) + 8 for k, v in options.headers.items())
    return sum(len(t.encode()) for t in text) + headers + _TASK_FIXED_BYTES


@dataclass(frozen=True, slots=True)
class ChunkCall(Generic[T]):
    """One chunk's SubmitMany call in flight, and which tasks of the group it carries."""

    start: int
    count: int
    call: T


def chunk_failure(
    failure: Exception, start: int, count: int, later: list[tuple[int, int, bool]]
) -> Exception:
    """The error of a failed chunk, saying which tasks of the group were accepted."""
    parts = [f"tasks {start}-{start + count - 1} of the group were not accepted: {failure}"]
    if start:
        parts.append(f"tasks 0-{start - 1} were accepted")
    for later_start, later_count, accepted in later:
        verdict = "were accepted" if accepted else "were not accepted either"
        end = later_start + later_count - 1
        parts.append(f"tasks {later_start}-{end} (sent already) {verdict}")
    error = type(failure)("; ".join(parts))
    if isinstance(failure, CeleriacError) and isinstance(error, CeleriacError):
        error.reason, error.metadata = failure.reason, failure.metadata  # what a program matches
    return error
