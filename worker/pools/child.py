"""The main loop of a process-pool child: receive a job, run it, send back its outcome.

Messages from the parent are `Job`s; messages to the parent are tuples:
("ready", pid), ("event", TaskEvent), ("done", Outcome), ("failed", message).
The child ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group; the parent
decides what happens to running tasks). It exits when the worker goes away, even in the middle
of a task: a watchdog thread blocks on a second pipe that the parent never writes to, and the
read returns only when the parent's end closes, which the kernel does when the worker dies
(SIGKILL included). Without it a worker killed hard would leave children running their tasks
while the broker hands the same tasks to another worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
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


# The exit code of a child that stops because its worker is gone.
EXIT_PARENT_GONE = 70


def child_main(
    conn: Connection,
    parent_alive: Connection,
    modules: tuple[str, ...],
    settings: ExecutionSettings,
    loglevel: str,
) -> None:
    """Run jobs received over `conn` until it closes, or until the worker process is gone.

    Args:
        conn: This child's end of the pipe to the parent.
        parent_alive: A pipe end that reads EOF once the parent's end closes (nothing is sent).
        modules: Task modules to import.
        settings: Execution settings.
        loglevel: Logging level (children are fresh interpreters; they configure their own).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _raise_soft_time_limit)
    logging.basicConfig(level=loglevel.upper(), format="%(levelname)s %(name)s: %(message)s")
    threading.Thread(
        target=_exit_when_parent_dies, args=(parent_alive,), name="parent-watchdog", daemon=True
    ).start()
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


def _exit_when_parent_dies(parent_alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        parent_alive.recv()
    # Not sys.exit: the main thread may be deep in a task that must not run on unsupervised.
    logger.warning("the worker process is gone: child %s stops and exits", os.getpid())
    os._exit(EXIT_PARENT_GONE)


def _raise_soft_time_limit(signum: int, frame: FrameType | None) -> None:
    raise SoftTimeLimitExceeded("soft time limit exceeded")
