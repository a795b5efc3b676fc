"""The default pool: one child process per slot, one task per child at a time.

Children come from the `forkserver` start method, so they never inherit the worker's gRPC
channel (gRPC is not fork-safe once a channel exists). The parent talks to each child over a
`multiprocessing` pipe and reads it with `loop.add_reader`, so the event loop never blocks on a
child. A child that dies (SIGKILL, crash, os._exit) fails only its own job and is replaced; a
hard time limit or a terminate-cancel kills only that child and replaces it. Soft time limits
are armed inside the child (SIGALRM), so the task sees `SoftTimeLimitExceeded` and can clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from worker.errors import WorkerError
from worker.execution import lost_outcome, revoked_outcome, time_limit_outcome
from worker.jobs import Job, Outcome
from worker.pools.base import PoolContext
from worker.pools.child import child_main

logger = logging.getLogger(__name__)

# How long a closing pool waits for an idle child to exit after its pipe closes.
_CHILD_EXIT_TIMEOUT = 5.0


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    conn: Connection
    # Never written: the child's watchdog sees EOF when this closes, i.e. when the worker dies.
    alive: Connection
    ready: asyncio.Future[None]
    job: Job | None = None
    future: asyncio.Future[Outcome] | None = None
    # Set when the parent kills the child on purpose: the job's outcome is this, not "lost".
    kill_outcome: Outcome | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class ProcessPool:
    """Run each job in a child process (Celery's prefork, without fork)."""

    def __init__(self, size: int, context: PoolContext) -> None:
        """Create a pool of `size` children; call `start()` to launch them."""
        self._size = size
        self._context = context
        self._mp = multiprocessing.get_context("forkserver")
        self._children: list[_Child] = []
        self._closing = False

    @property
    def slots(self) -> int:
        """One slot per child process."""
        return self._size

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
        """Send the job to an idle child; the future resolves with its outcome.

        Raises:
            WorkerError: No child can take the job now (the caller hands the lease back).
        """
        loop = asyncio.get_running_loop()
        # A child being killed may still have sent "done" for its last job: never reuse it.
        child = next((c for c in self._children if c.job is None and c.kill_outcome is None), None)
        if child is None:
            raise WorkerError("no idle child process: more jobs submitted than slots")
        try:
            child.conn.send(job)
        except OSError as exc:  # it died while idle and its EOF is not read yet
            raise WorkerError(f"child process {child.process.pid} is gone: {exc}") from exc
        child.job = job
        child.future = loop.create_future()
        if job.time_limit:
            handle = loop.call_later(job.time_limit, self._kill, child, time_limit_outcome(job))
            child.timers.append(handle)
        return child.future

    def terminate(self, lease_id: str, reason: str) -> bool:
        """Kill the child running this lease; its job becomes REVOKED."""
        for child in self._children:
            if child.job is not None and child.job.lease_id == lease_id:
                self._kill(child, revoked_outcome(child.job, reason))
                return True
        return False

    async def close(self, grace: float | None) -> None:
        """Let running jobs finish within `grace`, kill the rest, and stop every child."""
        self._closing = True
        running = [c.future for c in self._children if c.future is not None and not c.future.done()]
        if running and grace != 0:
            await asyncio.wait(running, timeout=grace)
        children, self._children = self._children, []
        for child in children:
            if child.job is not None:
                logger.warning(
                    "killing unfinished task id=%s name=%s", child.job.task_id, child.job.name
                )
                self._settle(child, None)
                self._signal(child, signal.SIGKILL)
            self._forget(child)
            child.conn.close()  # an idle child reads EOF and exits
        await asyncio.gather(*(asyncio.to_thread(self._reap, c.process) for c in children))
        for child in children:
            # Only now: closing it earlier would make idle children exit as if orphaned.
            child.alive.close()

    def _spawn(self) -> _Child:
        loop = asyncio.get_running_loop()
        parent_end, child_end = self._mp.Pipe()
        watched_end, alive_end = self._mp.Pipe(duplex=False)
        context = self._context
        process = self._mp.Process(
            target=child_main,
            args=(child_end, watched_end, context.modules, context.settings, context.loglevel),
            name="celeriac-child",
            daemon=True,
        )
        process.start()
        child_end.close()
        watched_end.close()
        child = _Child(
            process=process, conn=parent_end, alive=alive_end, ready=loop.create_future()
        )
        self._children.append(child)
        loop.add_reader(parent_end.fileno(), self._on_readable, child)
        return child

    def _on_readable(self, child: _Child) -> None:
        try:
            kind, value = child.conn.recv()
        except (EOFError, OSError):
            self._on_child_exit(child)
            return
        if kind == "event":
            self._context.on_event(value)
        elif kind == "done":
            self._settle(child, value)
        elif kind == "ready":
            if not child.ready.done():
                child.ready.set_result(None)
        elif kind == "failed" and not child.ready.done():
            child.ready.set_exception(WorkerError(value))

    def _on_child_exit(self, child: _Child) -> None:
        self._forget(child)
        child.conn.close()
        child.process.join(_CHILD_EXIT_TIMEOUT)
        child.alive.close()
        reason = _exit_reason(child.process)
        if not child.ready.done():
            child.ready.set_exception(WorkerError(f"child process {reason} while starting"))
        if child.job is not None:
            outcome = child.kill_outcome or lost_outcome(child.job, self._context.tasks, reason)
            if child.kill_outcome is None:
                logger.error("child process %s while running task id=%s", reason, child.job.task_id)
            self._settle(child, outcome)
        if child in self._children:
            self._children.remove(child)
        if not self._closing:
            replacement = self._spawn()
            logger.info(
                "replaced child process %s with %s", child.process.pid, replacement.process.pid
            )

    def _kill(self, child: _Child, outcome: Outcome) -> None:
        if child.job is None or child.kill_outcome is not None:
            return
        logger.warning(
            "killing child %s running task id=%s: %s",
            child.process.pid,
            child.job.task_id,
            outcome.error.message if outcome.error else outcome.state.value,
        )
        child.kill_outcome = outcome
        self._signal(child, signal.SIGKILL)

    def _settle(self, child: _Child, outcome: Outcome | None) -> None:
        """Finish the child's job: resolve its future (cancel it when outcome is None)."""
        for handle in child.timers:
            handle.cancel()
        child.timers.clear()
        if child.future is not None and not child.future.done():
            if outcome is None:
                child.future.cancel()
            else:
                child.future.set_result(outcome)
        child.job = None
        child.future = None

    def _forget(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        if not child.conn.closed:
            loop.remove_reader(child.conn.fileno())

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


def _exit_reason(process: BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return f"{process.pid} vanished"
    if code < 0:
        return f"{process.pid} was killed by {signal.Signals(-code).name}"
    return f"{process.pid} exited with code {code}"
