"""Group submission in chunks: how many calls stay in flight, and what a failed chunk means.

A group goes to the broker as one ``SubmitMany`` per chunk, several at once. Each chunk is
accepted all or nothing; when one fails, the error must say which tasks the broker holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# SubmitMany calls a group keeps open at once: two let the client encode one chunk while the
# broker accepts the other; a third keeps the broker busy while an answer travels back.
SUBMIT_WINDOW = 3


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
    return type(failure)("; ".join(parts))
