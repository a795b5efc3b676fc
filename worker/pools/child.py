"""The main loop of a process-pool child: receive a batch of jobs, run them, send back outcomes.

Messages from the parent are batches: lists of `(seq, job)`, run in order, each only if the
child can claim it (`handoff.Claims`: the parent may have withdrawn it). Messages to the parent
are tuples: ("ready", pid), ("event", TaskEvent), ("failed", message), and
("done", [(seq, outcome), ...], busy) where busy is the seconds spent running those jobs. Jobs
and outcomes travel as plain tuples (`worker.pools.wire`).
Outcomes are gathered for up to `FLUSH_INTERVAL` and sent at the end of every batch; they go out
at once before a job of a task not yet seen to finish within that interval, so a long task never
holds back the outcomes of the short ones before it.
The child ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group; the parent
decides what happens to running tasks). It exits when the worker goes away, even in the middle
of a task: a watchdog thread blocks on another pipe that the parent never writes to, and the
read returns only when the parent's end closes, which the kernel does when the worker dies
(SIGKILL included). Without it a worker killed hard would leave children running their tasks
while the broker hands the same tasks to another worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from types import FrameType

from celeriac.logs import LogSettings
from celeriac.logs import configure as configure_logging
from client import signals
from client.errors import SoftTimeLimitExceeded
from client.task import Task
from worker import loader
from worker.collector import tune_collector
from worker.errors import TaskModuleError
from worker.execution import EventSink, ExecutionSettings, execute, failure
from worker.jobs import Job, Outcome, TaskEvent
from worker.logcontext import TaskContext
from worker.pools.handoff import Claims
from worker.pools.wire import JobWire, OutcomeWire, job_from_wire, name_of, outcome_to_wire

logger = logging.getLogger(__name__)


# The exit code of a child that stops because its worker is gone.
EXIT_PARENT_GONE = 70

# The longest a finished job's outcome waits in the child for the others of its batch.
FLUSH_INTERVAL = 0.001


def child_main(
    inbox: Connection,
    outbox: Connection,
    parent_alive: Connection,
    modules: tuple[str, ...],
    settings: ExecutionSettings,
    *,
    logs: LogSettings,
    claims: Claims,
) -> None:
    """Run jobs received on `inbox` until it closes, or until the worker process is gone.

    Args:
        inbox: The pipe the parent sends batches of jobs down.
        outbox: The pipe this child sends its messages to the parent up.
        parent_alive: A pipe end that reads EOF once the parent's end closes (nothing is sent).
        modules: Task modules to import.
        settings: Execution settings.
        logs: How to log (children are fresh interpreters; they configure their own).
        claims: The table deciding whether this child or the parent owns each queued job.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _raise_soft_time_limit)
    configure_logging(logs, filters=[TaskContext()])
    threading.Thread(
        target=_exit_when_parent_dies, args=(parent_alive,), name="parent-watchdog", daemon=True
    ).start()
    try:
        registry = loader.load(modules)
    except TaskModuleError as exc:
        outbox.send(("failed", str(exc)))
        return
    signals.worker_process_init.send(sender=None)
    tune_collector()
    outbox.send(("ready", os.getpid()))

    runner = _BatchRunner(outbox, claims, registry.tasks, settings)
    while True:
        try:
            batch: list[tuple[int, JobWire]] = inbox.recv()
        except (EOFError, OSError):
            return
        runner.run(batch)


def send(conn: Connection, message: object) -> None:
    """Send a message over a pool pipe (the parent's batches, the child's outcomes and events).

    Plain pickle: ``Connection.send`` pickles with multiprocessing's ForkingPickler, whose extra
    reducers (for sockets, connections and the like) none of these messages needs, and which
    costs ~2 µs more per message. ``Connection.recv`` reads either.
    """
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


class _BatchRunner:
    """Runs batches in order and sends their outcomes in as few messages as latency allows."""

    def __init__(
        self,
        conn: Connection,
        claims: Claims,
        tasks: Mapping[str, Task],
        settings: ExecutionSettings,
    ) -> None:
        self._conn = conn
        self._claims = claims
        self._tasks = tasks
        self._settings = settings
        # Task names whose last run took under FLUSH_INTERVAL: their outcomes may wait for them.
        self._quick: set[str] = set()
        self._done: list[tuple[int, OutcomeWire]] = []
        self._busy = 0.0
        self._first_done = 0.0

    def run(self, batch: list[tuple[int, JobWire]]) -> None:
        for seq, wire in batch:
            name = name_of(wire)
            if self._done and (
                name not in self._quick or time.perf_counter() - self._first_done >= FLUSH_INTERVAL
            ):
                self._flush()
            if not self._claims.claim(seq):
                continue  # withdrawn by the parent: revoked, or given to another child
            job = job_from_wire(wire)
            began = time.perf_counter()
            outcome = _run(job, self._tasks, self._send_event, self._settings)
            ended = time.perf_counter()
            if ended - began < FLUSH_INTERVAL:
                self._quick.add(job.name)
            else:
                self._quick.discard(job.name)
            if not self._done:
                self._first_done = ended
            self._done.append((seq, outcome_to_wire(outcome)))
            self._busy += ended - began
        self._flush()

    def _send_event(self, event: TaskEvent) -> None:
        self._flush()  # the parent sees outcomes and events in the order they happened
        send(self._conn, ("event", event))

    def _flush(self) -> None:
        if self._done:
            send(self._conn, ("done", self._done, self._busy))
            self._done = []
            self._busy = 0.0


def _run(
    job: Job, tasks: Mapping[str, Task], sink: EventSink, settings: ExecutionSettings
) -> Outcome:
    """Run one job with SIGALRM armed for its soft time limit, and always disarm it."""
    if not job.soft_time_limit:
        return execute(job, tasks, sink, settings)  # no alarm to arm or disarm
    outcome: Outcome | None = None
    try:
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
