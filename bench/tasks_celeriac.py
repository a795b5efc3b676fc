"""The benchmark's Celeriac tasks: the same bodies as the Celery side's (`systems/celery_app.py`).

Workers import this module (`python -m worker --tasks bench.tasks_celeriac --broker ADDR`);
the harness builds its own app per broker with `make_app`, registering the same names.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from bench.limits import STAMPED_RATE
from client import Celeriac

# The worker's per-task INFO lines (worker.tasklog) are off, as Celery's are on its side
# (systems/celery_app.py): the harness runs both workers at INFO to see their "ready" lines, and
# the comparison is of the queues, not of log formatting.
logging.getLogger("worker.tasklog").setLevel(logging.WARNING)

NOOP = "bench.noop"
STAMPED = "bench.stamped"
ASYNC_NOOP = "bench.async_noop"
ADD = "bench.add"
INC = "bench.inc"
COUNT = "bench.count"


@dataclass(frozen=True)
class CeleriacBench:
    """A Celeriac app with the benchmark's tasks registered on it."""

    app: Celeriac
    noop: Any
    async_noop: Any
    add: Any
    stamped: Any
    inc: Any
    count: Any


def noop() -> None:
    """Do nothing: the benchmark measures the queue, not the task."""


async def async_noop() -> None:
    """The no-op as asyncio pool users write it (a sync body there runs in a thread)."""


def add(x: int, y: int) -> int:
    """The round-trip probe."""
    return x + y


def stamped() -> float:
    """When it started (wall clock): the rate-limit scenario's probe."""
    return time.time()


def inc(x: int) -> int:
    """A chain's link: one more than the link before."""
    return x + 1


def count(results: list[object]) -> int:
    """A chord's body: how many member results arrived."""
    return len(results)


def make_app(broker: str, **options: Any) -> CeleriacBench:
    """A Celeriac app on the broker at this address with the benchmark's tasks."""
    app = Celeriac("bench", broker=broker, **options)
    return CeleriacBench(
        app=app,
        noop=app.task(name=NOOP)(noop),
        async_noop=app.task(name=ASYNC_NOOP)(async_noop),
        add=app.task(name=ADD)(add),
        stamped=app.task(name=STAMPED, rate_limit=f"{STAMPED_RATE}/s")(stamped),
        inc=app.task(name=INC)(inc),
        count=app.task(name=COUNT)(count),
    )


bench = make_app(os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))
app = bench.app
