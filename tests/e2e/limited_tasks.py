"""Tasks under global limits, for tests/e2e/test_limits.py: each records when and where it ran."""

from __future__ import annotations

import os
import time
from pathlib import Path

from client import Celeriac, Task

app = Celeriac("e2e-limits", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))

RATE = 20  # per second, across every worker


@app.task(rate_limit=f"{RATE}/s")
def stamped() -> tuple[float, int]:
    """When it started (wall clock) and in which worker process."""
    return time.time(), os.getpid()


@app.task(rate_limit="1/m")
def trickle() -> float:
    """Under a limit too slow for a test to wait out, unless an operator overrides it."""
    return time.time()


@app.task(concurrency_limit=1)
def exclusive(hold: float) -> tuple[float, float, int]:
    """Runs ``hold`` seconds; returns when it started and ended, and its worker's pid."""
    started = time.time()
    time.sleep(hold)
    return started, time.time(), os.getpid()


@app.task(bind=True, concurrency_limit=1)
def held(self: Task, flag: str) -> int:
    """Say so, then hold its slot until ``flag`` exists (at most 30 s)."""
    print(f"HOLDING {self.request.id}", flush=True)
    deadline = time.monotonic() + 30
    while not Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


@app.task
def unlimited() -> tuple[float, int]:
    """When it started and in which worker process, under no limit."""
    return time.time(), os.getpid()
