"""Task ids are random version-4 UUIDs in their usual text form, never repeated."""

from __future__ import annotations

import uuid

from broker.core.ids import TaskIds


def test_ids_are_version_4_uuids_in_canonical_text() -> None:
    ids = TaskIds()
    for _ in range(600):  # more than one read of random bytes
        text = ids.new()
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_ids_do_not_repeat_within_or_across_sources() -> None:
    first, second = TaskIds(), TaskIds()
    made = [first.new() for _ in range(5_000)] + [second.new() for _ in range(5_000)]
    assert len(set(made)) == len(made)


def test_the_random_bits_vary_across_the_whole_id() -> None:
    ids = [uuid.UUID(TaskIds().new()).int for _ in range(200)]
    fixed = uuid.UUID("00000000-0000-4000-8000-000000000000").int
    varying = 0
    for value in ids:
        varying |= value ^ ids[0]
    # Every bit but the six fixed version/variant bits changes somewhere in 200 ids.
    assert bin(varying).count("1") == 122
    assert all(value & fixed == fixed for value in ids)
