"""Many held GetResult calls for one large result cost the broker one copy of it, not one each."""

from __future__ import annotations

import json

from tests.support import run_python

WAITERS = 200
RESULT_BYTES = 900_000


def test_waiters_share_one_encoded_result_and_memory_comes_back_down() -> None:
    completed = run_python(
        "-m", "bench.held_waiters",
        "--waiters", str(WAITERS), "--result-bytes", str(RESULT_BYTES), "--json",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.splitlines()[-1])
    # A copy per waiter would be 200 x 900 KB = 172 MiB at least (it was twice that).
    assert figures["peak growth MiB"] < 40, figures
    assert figures["rss after MiB"] - figures["rss before MiB"] < 20, figures
