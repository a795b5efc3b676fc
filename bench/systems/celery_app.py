"""The Celery side: an app on Redis with the same task bodies as `bench.tasks_celeriac`.

A worker imports this module (`celery -A bench.systems.celery_app worker`) and reads the Redis
URL from BENCH_REDIS_URL; the harness builds its own app per Redis server with `make_app`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals

from bench.limits import STAMPED_RATE

DEFAULT_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class CeleryBench:
    """A Celery app with the benchmark's tasks registered on it."""

    app: Any
    noop: Any
    add: Any
    stamped: Any
    inc: Any
    count: Any


def noop() -> None:
    """Do nothing: the benchmark measures the queue, not the task."""


def add(x: int, y: int) -> int:
    """The round-trip probe."""
    return x + y


def inc(x: int) -> int:
    """A chain's link: one more than the link before."""
    return x + 1


def count(results: list[object]) -> int:
    """A chord's body: how many member results arrived."""
    return len(results)


def _quiet_per_task_logs(**_: Any) -> None:
    """Keep Celery's worker from logging every task, as Celeriac's does not.

    The harness starts both workers at ``--loglevel info`` (it waits for their "ready" lines).
    At INFO, Celery writes two lines per task (received, succeeded), and so does Celeriac's
    worker (worker.tasklog, turned off the same way in bench/tasks_celeriac.py). Celery's own
    default level, WARNING, prints neither, so turning them off compares the queues, not log
    formatting.
    """
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


signals.after_setup_logger.connect(_quiet_per_task_logs)


def stamped() -> float:
    """When it started (wall clock): the rate-limit scenario's probe."""
    return time.time()


def make_app(url: str) -> CeleryBench:
    """A Celery app using the Redis server at url as broker and result backend."""
    app = Celery("bench", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # When a run is interrupted, pending results are collected after the harness has
        # stopped Redis; without this their clean-up retries the lost connection for 20 s.
        result_backend_transport_options={
            "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}
        },
    )
    return CeleryBench(
        app=app,
        noop=app.task(name="bench.noop")(noop),
        add=app.task(name="bench.add")(add),
        stamped=app.task(name="bench.stamped", rate_limit=f"{STAMPED_RATE}/s")(stamped),
        inc=app.task(name="bench.inc")(inc),
        count=app.task(name="bench.count")(count),
    )


bench = make_app(os.environ.get("BENCH_REDIS_URL", DEFAULT_URL))
app = bench.app
