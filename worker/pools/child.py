"""The main loop of a process-pool child: receive a job, run it, send back its outcome.

Messages from the parent are `Job`s; messages to the parent are tuples:
("ready", pid), ("event", TaskEvent), ("done", Outcome), ("failed", message).
The child ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group; the parent
decides what happens to running tasks) and exits when its pipe closes, so it never outlives
the worker by more than the task it is running.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from multiprocessing.connection import Connection
from types import FrameType

from client.errors import SoftTimeLimitExceeded
from client.task import Task
from worker import loader
from worker.errors import TaskModuleError
from worker.execution import EventSink, ExecutionSettings, execute, failure
from worker.jobs import Job, Outcome, TaskEvent

logger = logging.getLogger(__name__)


def child_main(
    conn: Connection, modules: tuple[str, ...], settings: ExecutionSettings, loglevel: str
) -> None:
    """Run jobs received over `conn` until it closes.

    Args:
        conn: This child's end of the pipe to the parent.
        modules: Task modules to import.
        settings: Execution settings.
        loglevel: Logging level (children are fresh interpreters; they configure their own).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _raise_soft_time_limit)
    logging.basicConfig(level=loglevel.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        registry = loader.load(modules)
    except TaskModuleError as exc:
        conn.send(("failed", str(exc)))
        return
    conn.send(("ready", os.getpid()))

    def send_event(event: TaskEvent) -> None:
        conn.send(("event", event))

    while True:
        try:
            job: Job = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(("done", _run(job, registry.tasks, send_event, settings)))


def _run(
    job: Job, tasks: Mapping[str, Task], sink: EventSink, settings: ExecutionSettings
) -> Outcome:
    """Run one job with SIGALRM armed for its soft time limit, and always disarm it."""
    outcome: Outcome | None = None
    try:
        if job.soft_time_limit:
            signal.setitimer(signal.ITIMER_REAL, job.soft_time_limit)
        try:
            outcome = execute(job, tasks, sink, settings)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except SoftTimeLimitExceeded as exc:
        # The alarm fired outside the task's own code (e.g. while encoding its result).
        if outcome is None:
            outcome = failure(job.lease_id, exc, retryable=False)
    return outcome


def _raise_soft_time_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")
