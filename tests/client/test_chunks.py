"""How a group is cut into SubmitMany chunks: by count, and by size under the message limit."""

from __future__ import annotations

from client.chunks import group_chunks
from client.codec import submit_many_request
from client.records import EncodedValue, ResolvedOptions, SubmitSpec

OPTIONS = ResolvedOptions(name="tasks.echo", queue="default", headers={"trace": "t" * 50})


def specs(sizes: list[int]) -> list[SubmitSpec]:
    return [
        SubmitSpec(f"task-{index}", EncodedValue("application/json", b"x" * size), OPTIONS)
        for index, size in enumerate(sizes)
    ]


def test_without_a_known_limit_chunks_are_cut_by_count_only() -> None:
    chunks = list(group_chunks(specs([10_000] * 7), count=3, max_message_bytes=0))
    assert [len(chunk) for chunk in chunks] == [3, 3, 1]


def test_every_chunk_encodes_within_the_limit_and_keeps_group_order() -> None:
    group = specs([3_000, 500, 9_000, 100, 4_000, 4_000, 7_500, 20, 8_000])
    chunks = list(group_chunks(group, count=1000, max_message_bytes=12_000))
    assert len(chunks) > 1
    assert [spec for chunk in chunks for spec in chunk] == group
    assert all(submit_many_request(chunk).ByteSize() <= 12_000 for chunk in chunks)


def test_a_task_too_large_for_any_message_travels_alone() -> None:
    chunks = list(group_chunks(specs([100, 50_000, 100]), count=1000, max_message_bytes=12_000))
    assert [len(chunk) for chunk in chunks] == [1, 1, 1]
