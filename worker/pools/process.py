"""The default pool: child processes, each running short tasks in small batches.

Children come from the `forkserver` start method, so they never inherit the worker's gRPC
channel (gRPC is not fork-safe once a channel exists). The parent talks to each child over two
one-way `multiprocessing` pipes (jobs down one, outcomes up the other) and reads with
`loop.add_reader`, so the event loop never blocks on a child. Not one duplex pipe: that is a
socket pair, and a socket wakes a reader blocked on it whenever its peer reads (buffer space was
freed), so every outcome the parent read woke the idle child for nothing: a context switch (on
a VM, an interrupt to an idle core) in the middle of each round trip. Jobs wait in the pool
until a child is free; a free child gets a batch of them in one message, sized to a few
milliseconds of work at the children's measured speed (a single job while that speed is unknown
or tasks are slow, so an idle pool still starts a lone job at once).
Jobs with a time limit always travel alone, to a child with nothing else to do, because their
limits are enforced per child: a hard limit kills the child, a soft limit is armed inside it
(SIGALRM) so the task sees `SoftTimeLimitExceeded` and can clean up.

A job waiting in a child's batch is not started until the child claims it (`handoff.Claims`), so
the parent can still take it back: terminate revokes it without running it, and a batch stuck
behind a long task is handed to other children. A child that dies (SIGKILL, crash, os._exit)
fails only the job it was running and is replaced; the jobs of its batch that had not started
go back to the pool and run on another child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from worker.errors import NotStarted, WorkerError
from worker.execution import lost_outcome, revoked_outcome, time_limit_outcome
from worker.jobs import Job, Outcome
from worker.pools.base import PoolContext
from worker.pools.child import child_main, send
from worker.pools.handoff import Claims
from worker.pools.wire import OutcomeWire, job_to_wire, outcome_from_wire

logger = logging.getLogger(__name__)

# How long a closing pool waits for an idle child to exit after its pipe closes.
_CHILD_EXIT_TIMEOUT = 5.0
# A batch holds about this much work (seconds) at the measured time per job...
_BATCH_SPAN = 0.002
# ...and never more than this many jobs.
_MAX_BATCH = 32
# A child that reports nothing for this long while jobs wait in its batch gives them up.
_STUCK_AFTER = 0.05
# Weight of the newest measurement in the moving time per job.
_SMOOTHING = 0.2


@dataclass(eq=False)
class _Entry:
    job: Job
    future: asyncio.Future[Outcome]


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    # The parent's ends: it reads outcomes and events from `inbox` and writes jobs to `outbox`.
    inbox: Connection
    outbox: Connection
    # Never written: the child's watchdog sees EOF when this closes, i.e. when the worker dies.
    alive: Connection
    claims: Claims
    ready: asyncio.Future[None]
    # Sent and not settled, by sequence number, in the order the child runs them.
    jobs: dict[int, _Entry] = field(default_factory=dict)
    next_seq: int = 0
    # Set when the parent kills the child on purpose: that job's outcome, not "lost".
    kill_outcomes: dict[int, Outcome] = field(default_factory=dict)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    # Outcome messages received, and the watch for a batch stuck behind a long task.
    reports: int = 0
    stuck_watch: asyncio.TimerHandle | None = None
    gone: bool = False
    # Taken out by a shrink: it gets no new jobs and ends, unreplaced, once its jobs are done.
    retiring: bool = False


class ProcessPool:
    """Run jobs in child processes (Celery's prefork, without fork)."""

    def __init__(self, size: int, context: PoolContext) -> None:
        """Create a pool of `size` children; call `start()` to launch them."""
        self._size = size
        self._context = context
        self._mp = multiprocessing.get_context("forkserver")
        self._children: list[_Child] = []
        self._pending: deque[_Entry] = deque()
        self._dispatch_due = False
        self._job_seconds: float | None = None
        self._closing = False
        # Retired children being reaped (held so their reaping tasks are not collected).
        self._reaping: set[asyncio.Task[None]] = set()

    @property
    def slots(self) -> int:
        """One slot per child process."""
        return self._size

    @property
    def capacity(self) -> int:
        """How many jobs the pool holds when the worker tops it up now.

        What the children hold, plus a batch for each free child (one job when tasks are
        slow). Nothing more: a job the pool cannot place at once stays in the worker's buffer,
        where the prefetch hold limit can hand it back to the broker.
        """
        # A child still starting (a replacement) counts: its jobs wait here until it is ready.
        free = sum(1 for child in self._children if self._is_idle(child))
        held = sum(len(child.jobs) for child in self._children) + len(self._pending)
        return held + max(0, free * self._batch_size() - len(self._pending))

    @property
    def pids(self) -> tuple[int, ...]:
        """The pids of the children that take jobs (not those retiring after a shrink)."""
        return tuple(c.process.pid or 0 for c in self._children if not c.retiring)

    def pid_of(self, lease_id: str) -> int:
        """The pid of the child running this lease's job (0 if none has started it)."""
        for child in self._children:
            for seq, entry in child.jobs.items():
                if entry.job.lease_id == lease_id:
                    return (child.process.pid or 0) if child.claims.started(seq) else 0
        return 0

    def resize(self, slots: int) -> None:
        """Start children up to `slots`, or retire the surplus.

        Idle children retire at once, busy ones once their jobs are done: a shrink never stops
        a running task.
        """
        self._size = slots
        live = [child for child in self._children if not child.retiring]
        for _ in range(slots - len(live)):
            self._spawn()
        surplus = len(live) - slots
        if surplus > 0:
            for child in sorted(live, key=lambda c: len(c.jobs))[:surplus]:
                child.retiring = True
                if not child.jobs:
                    self._retire(child)
        logger.info("process pool resized to %d children", slots)

    async def start(self) -> None:
        """Launch the children and wait until each has imported the task modules.

        Raises:
            WorkerError: A child could not import the task modules.
        """
        # Children fork from a server that already imported the worker and the task modules,
        # so replacing a dead child is quick.
        self._mp.set_forkserver_preload(["worker.pools.child", *self._context.modules])
        for _ in range(self._size):
            self._spawn()
        try:
            await asyncio.gather(*(child.ready for child in self._children))
        except WorkerError:
            await self.close(0)  # stop the children that did start, and do not replace any
            raise
        pids = ", ".join(str(child.process.pid) for child in self._children)
        logger.info("process pool started children=%s", pids)

    def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Queue the job for the next free child; the future resolves with its outcome."""
        entry = _Entry(job, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        if len(self._pending) == 1 and not self._dispatch_due and self._has_free_child():
            # A lone job and an idle child: send it now rather than a loop turn later. Jobs
            # submitted after it in this turn still travel together (the deferred dispatch).
            self._dispatch()
        else:
            self._schedule_dispatch()
        return entry.future

    def terminate(self, lease_id: str, reason: str) -> bool:
        """Revoke this lease's job: not run if it has not started, else its child is killed."""
        for entry in self._pending:
            if entry.job.lease_id == lease_id:
                self._pending.remove(entry)
                entry.future.set_result(revoked_outcome(entry.job, reason))
                return True
        for child in self._children:
            for seq, entry in child.jobs.items():
                if entry.job.lease_id != lease_id:
                    continue
                if child.claims.withdraw(seq):
                    del child.jobs[seq]
                    entry.future.set_result(revoked_outcome(entry.job, reason))
                else:
                    self._kill(child, seq, revoked_outcome(entry.job, reason))
                return True
        return False

    async def close(self, grace: float | None) -> None:
        """Let queued and running jobs finish within `grace`, kill the rest, stop every child."""
        self._closing = True
        waiting = [e.future for e in self._pending] + [
            e.future for c in self._children for e in c.jobs.values()
        ]
        waiting = [future for future in waiting if not future.done()]
        if waiting and grace != 0:
            await asyncio.wait(waiting, timeout=grace)
        while self._pending:
            self._pending.popleft().future.cancel()
        children, self._children = self._children, []
        for child in children:
            self._stop_watching(child)
            if child.jobs:
                for seq, entry in child.jobs.items():
                    if child.claims.started(seq):
                        logger.warning(
                            "killing unfinished task id=%s name=%s",
                            entry.job.task_id,
                            entry.job.name,
                        )
                    entry.future.cancel()
                child.jobs.clear()
                self._signal(child, signal.SIGKILL)
            self._forget(child)
            self._close_pipes(child)  # an idle child reads EOF and exits
        await asyncio.gather(*(asyncio.to_thread(self._reap, c.process) for c in children))
        await asyncio.gather(*self._reaping)
        for child in children:
            # Only now: closing it earlier would make idle children exit as if orphaned.
            child.alive.close()

    def _batch_size(self) -> int:
        if self._job_seconds is None:
            return 1
        return max(1, min(_MAX_BATCH, int(_BATCH_SPAN / max(self._job_seconds, 1e-6))))

    def _schedule_dispatch(self) -> None:
        # Deferred to the end of this loop turn, so jobs submitted together travel together.
        if not self._dispatch_due:
            self._dispatch_due = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Send pending jobs to the free children, sharing them out evenly."""
        self._dispatch_due = False
        free = [c for c in self._children if self._is_free(c)]
        size = self._batch_size()
        while self._pending and free:
            child = free.pop(0)
            share = math.ceil(len(self._pending) / (len(free) + 1))
            batch = self._take_batch(min(size, share))
            self._send(child, batch)

    def _has_free_child(self) -> bool:
        return any(self._is_free(child) for child in self._children)

    @staticmethod
    def _is_idle(child: _Child) -> bool:
        # A child being killed may still send outcomes: never give it more.
        return not child.jobs and not child.kill_outcomes and not child.gone and not child.retiring

    @classmethod
    def _is_free(cls, child: _Child) -> bool:
        return child.ready.done() and cls._is_idle(child)

    def _take_batch(self, size: int) -> list[_Entry]:
        """Up to `size` pending jobs; a job with time limits only ever travels alone."""
        batch = [self._pending.popleft()]
        if _has_limits(batch[0].job):
            return batch
        while len(batch) < size and self._pending and not _has_limits(self._pending[0].job):
            batch.append(self._pending.popleft())
        return batch

    def _send(self, child: _Child, batch: list[_Entry]) -> None:
        numbered = []
        for entry in batch:
            seq = child.next_seq
            child.next_seq += 1
            child.claims.queued(seq)
            numbered.append((seq, entry))
        try:
            send(child.outbox, [(seq, job_to_wire(entry.job)) for seq, entry in numbered])
        except OSError as exc:  # it died while idle and its EOF is not read yet
            logger.warning("child process %s is gone: %s", child.process.pid, exc)
            child.gone = True
            self._pending.extendleft(reversed(batch))
            self._schedule_dispatch()
            return
        child.jobs.update(numbered)
        job = batch[0].job
        if job.time_limit and len(batch) == 1:
            loop = asyncio.get_running_loop()
            seq = numbered[0][0]
            kill = time_limit_outcome(job)
            child.timers.append(loop.call_later(job.time_limit, self._kill, child, seq, kill))
        elif len(batch) > 1:
            self._watch_for_stuck(child)

    def _spawn(self) -> _Child:
        loop = asyncio.get_running_loop()
        inbox, child_outbox = self._mp.Pipe(duplex=False)
        child_inbox, outbox = self._mp.Pipe(duplex=False)
        watched_end, alive_end = self._mp.Pipe(duplex=False)
        claims = Claims(self._mp)
        context = self._context
        process = self._mp.Process(
            target=child_main,
            args=(child_inbox, child_outbox, watched_end, context.modules, context.settings),
            kwargs={"logs": context.logs, "claims": claims},
            name="celeriac-child",
            daemon=True,
        )
        process.start()
        child_inbox.close()
        child_outbox.close()
        watched_end.close()
        child = _Child(
            process=process,
            inbox=inbox,
            outbox=outbox,
            alive=alive_end,
            claims=claims,
            ready=loop.create_future(),
        )
        self._children.append(child)
        loop.add_reader(inbox.fileno(), self._on_readable, child)
        return child

    def _on_readable(self, child: _Child) -> None:
        try:
            message = child.inbox.recv()
        except (EOFError, OSError):
            self._on_child_exit(child)
            return
        kind = message[0]
        if kind == "done":
            self._on_outcomes(child, message[1], message[2])
        elif kind == "event":
            self._context.on_event(message[1])
        elif kind == "ready":
            if not child.ready.done():
                child.ready.set_result(None)
                self._schedule_dispatch()
        elif kind == "failed" and not child.ready.done():
            child.ready.set_exception(WorkerError(message[1]))

    def _on_outcomes(
        self, child: _Child, outcomes: list[tuple[int, OutcomeWire]], busy: float
    ) -> None:
        child.reports += 1
        for seq, wire in outcomes:
            entry = child.jobs.pop(seq, None)
            child.kill_outcomes.pop(seq, None)  # it ended before the kill: its own outcome wins
            if entry is not None and not entry.future.done():
                entry.future.set_result(outcome_from_wire(wire))
        per_job = busy / len(outcomes)
        old = self._job_seconds
        self._job_seconds = per_job if old is None else old + _SMOOTHING * (per_job - old)
        if not child.jobs:
            self._stop_watching(child)
            if child.retiring:
                self._retire(child)
            self._schedule_dispatch()

    def _on_child_exit(self, child: _Child) -> None:
        self._forget(child)
        self._stop_watching(child)
        self._close_pipes(child)
        child.process.join(_CHILD_EXIT_TIMEOUT)
        child.alive.close()
        reason = _exit_reason(child.process)
        if not child.ready.done():
            child.ready.set_exception(WorkerError(f"child process {reason} while starting"))
        unstarted = []
        for seq, entry in child.jobs.items():
            outcome = child.kill_outcomes.get(seq)
            if outcome is None and not child.claims.started(seq):
                unstarted.append(entry)  # never ran: another child runs it
                continue
            if outcome is None:
                logger.error("child process %s while running task id=%s", reason, entry.job.task_id)
                outcome = lost_outcome(entry.job, self._context.tasks, reason)
            if not entry.future.done():
                entry.future.set_result(outcome)
        child.jobs.clear()
        if child in self._children:
            self._children.remove(child)
        if self._closing:
            for entry in unstarted:
                entry.future.cancel()
            return
        if child.retiring:  # a shrink took it out: its unstarted jobs go to the others
            self._pending.extendleft(reversed(unstarted))
            self._schedule_dispatch()
            return
        # The replacement is ready within moments: the unstarted jobs wait for it (or another).
        self._pending.extendleft(reversed(unstarted))
        replacement = self._spawn()
        logger.info("replaced child process %s with %s", child.process.pid, replacement.process.pid)
        self._schedule_dispatch()

    def _move_or_give_back(self, entries: list[_Entry]) -> None:
        """Send jobs withdrawn from a stuck child to a free child, or back to the worker.

        The worker's buffer hands them to the broker if no slot frees within the hold limit.
        """
        if any(self._is_free(child) for child in self._children):
            self._pending.extendleft(reversed(entries))
            self._schedule_dispatch()
            return
        for entry in entries:
            if not entry.future.done():
                lease = entry.job.lease_id
                entry.future.set_exception(NotStarted(f"lease={lease} waited behind a long task"))

    def _kill(self, child: _Child, seq: int, outcome: Outcome) -> None:
        if seq not in child.jobs or seq in child.kill_outcomes:
            return
        logger.warning(
            "killing child %s running task id=%s: %s",
            child.process.pid,
            child.jobs[seq].job.task_id,
            outcome.error.message if outcome.error else outcome.state.value,
        )
        child.kill_outcomes[seq] = outcome
        self._signal(child, signal.SIGKILL)

    def _watch_for_stuck(self, child: _Child) -> None:
        if child.stuck_watch is None:
            loop = asyncio.get_running_loop()
            child.stuck_watch = loop.call_later(
                _STUCK_AFTER, self._check_stuck, child, child.reports
            )

    def _check_stuck(self, child: _Child, reports_then: int) -> None:
        """Give a silent child's waiting jobs to the others (a long task holds it)."""
        child.stuck_watch = None
        if child not in self._children or len(child.jobs) < 2:
            return
        if child.reports == reports_then:
            taken = [seq for seq in child.jobs if child.claims.withdraw(seq)]
            if taken:
                logger.info(
                    "moving %d tasks queued behind a long task in child %s to other children",
                    len(taken),
                    child.process.pid,
                )
                self._move_or_give_back([child.jobs.pop(seq) for seq in taken])
        if len(child.jobs) > 1:
            self._watch_for_stuck(child)

    def _stop_watching(self, child: _Child) -> None:
        for handle in child.timers:
            handle.cancel()
        child.timers.clear()
        if child.stuck_watch is not None:
            child.stuck_watch.cancel()
            child.stuck_watch = None

    def _retire(self, child: _Child) -> None:
        """End an idle child taken out by a shrink: it reads EOF and exits; nobody replaces it."""
        if child in self._children:
            self._children.remove(child)
        self._stop_watching(child)
        self._forget(child)
        self._close_pipes(child)
        logger.info("retiring child process %s (pool shrink)", child.process.pid)
        reaping = asyncio.get_running_loop().create_task(self._reap_retired(child))
        self._reaping.add(reaping)
        reaping.add_done_callback(self._reaping.discard)

    async def _reap_retired(self, child: _Child) -> None:
        await asyncio.to_thread(self._reap, child.process)
        child.alive.close()

    def _forget(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        if not child.inbox.closed:
            loop.remove_reader(child.inbox.fileno())

    @staticmethod
    def _close_pipes(child: _Child) -> None:
        child.inbox.close()
        child.outbox.close()

    @staticmethod
    def _signal(child: _Child, signum: int) -> None:
        if child.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signum)

    @staticmethod
    def _reap(process: BaseProcess) -> None:
        process.join(_CHILD_EXIT_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(_CHILD_EXIT_TIMEOUT)


def stop_helper_processes() -> None:
    """End the fork server and the resource tracker that the pool made multiprocessing start.

    Both are children of the worker process that end by themselves once it has exited (each
    reads EOF on a pipe from it), but only after it: a supervisor that waits for the worker, or
    a test that checks what it left, would see them outlive it. Called at the worker's exit,
    once the pool is closed; while a pool child still lives (it holds the tracker's pipe) it
    does nothing rather than wait for that child. CPython has no public call for this; its
    ``_stop`` methods are what its own test suite uses.
    """
    if multiprocessing.active_children():
        return
    for helper in (
        getattr(multiprocessing.forkserver, "_forkserver", None),
        getattr(multiprocessing.resource_tracker, "_resource_tracker", None),
    ):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()


def _has_limits(job: Job) -> bool:
    return bool(job.time_limit or job.soft_time_limit)


def _exit_reason(process: BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return f"{process.pid} vanished"
    if code < 0:
        return f"{process.pid} was killed by {signal.Signals(-code).name}"
    return f"{process.pid} exited with code {code}"
