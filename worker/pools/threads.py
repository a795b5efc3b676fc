"""The thread pool (and "solo", its one-slot form): jobs run in threads of the worker process.

Threads are reused from job to job (`worker.task_threads`). A thread cannot be killed: when a
job passes its hard time limit or is terminated, the pool reports the outcome at once, asks the
thread to stop by raising an exception in it at its next Python instruction, and lets it go; a
fresh thread takes later jobs, and the stopped one's late outcome is ignored. Soft time limits
are raised the same way, so code blocked in a long C call (e.g. `time.sleep`) sees them only
when that call returns. Use the process pool when limits must be exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from dataclasses import dataclass, field

from client.errors import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from worker.execution import execute, revoked_outcome, time_limit_outcome
from worker.jobs import Job, Outcome, TaskEvent
from worker.pools.base import PoolContext
from worker.task_threads import TaskThread, TaskThreads, Work

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Running:
    job: Job
    future: asyncio.Future[Outcome]
    work: Work | None = None
    thread: TaskThread | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def interrupt(self, exc_type: type[BaseException]) -> None:
        """Raise `exc_type` in the job's thread, if the job still runs there."""
        if self.thread is not None and self.work is not None:
            self.thread.interrupt(self.work, exc_type)


class ThreadPool:
    """Run each job in a thread of the worker process."""

    def __init__(self, size: int, context: PoolContext) -> None:
        """Create a pool running up to `size` jobs at once."""
        self._size = size
        self._context = context
        self._running: dict[str, _Running] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = TaskThreads(keep_idle=size)

    @property
    def slots(self) -> int:
        """How many jobs run at once."""
        return self._size

    @property
    def capacity(self) -> int:
        """The same as `slots`: every job taken starts at once."""
        return self.slots

    @property
    def pids(self) -> tuple[int, ...]:
        """None: jobs run in the worker's own process."""
        return ()

    async def start(self) -> None:
        """Remember the loop that outcomes and events are delivered on."""
        self._loop = asyncio.get_running_loop()

    def resize(self, slots: int) -> None:
        """Run up to `slots` jobs at once (idle threads beyond that end as they park)."""
        self._size = slots
        self._threads.keep_idle = slots

    def pid_of(self, lease_id: str) -> int:
        """The worker's pid while the job runs (threads share its process)."""
        return os.getpid() if lease_id in self._running else 0

    def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Start the job in an idle thread (or a new one)."""
        loop = asyncio.get_running_loop()
        running = _Running(job, loop.create_future())
        self._running[job.lease_id] = running
        running.work = functools.partial(self._run, running)
        running.thread = self._threads.run(running.work)
        if job.soft_time_limit:
            running.timers.append(
                loop.call_later(job.soft_time_limit, running.interrupt, SoftTimeLimitExceeded)
            )
        if job.time_limit:
            running.timers.append(
                loop.call_later(job.time_limit, self._stop, running, time_limit_outcome(job))
            )
        return running.future

    def terminate(self, lease_id: str, reason: str) -> bool:
        """Report the job REVOKED now and ask its thread to stop."""
        running = self._running.get(lease_id)
        if running is None:
            return False
        self._stop(running, revoked_outcome(running.job, reason))
        return True

    async def close(self, grace: float | None) -> None:
        """Wait up to `grace` for running jobs; abandon the rest (their futures are cancelled)."""
        futures = [r.future for r in self._running.values()]
        if futures and grace != 0:
            await asyncio.wait(futures, timeout=grace)
        for running in list(self._running.values()):
            logger.warning(
                "abandoning unfinished task id=%s name=%s", running.job.task_id, running.job.name
            )
            self._settle(running, None)
        self._threads.close()

    def _run(self, running: _Running) -> None:
        assert self._loop is not None
        loop = self._loop

        def sink(event: TaskEvent) -> None:
            loop.call_soon_threadsafe(self._context.on_event, event)

        try:
            outcome = execute(running.job, self._context.tasks, sink, self._context.settings)
        except (TimeLimitExceeded, TaskRevokedError, SoftTimeLimitExceeded):
            return  # raised into this thread after its outcome was already reported
        # RuntimeError: the loop is closed; the worker is gone and nobody wants this outcome.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._settle, running, outcome)

    def _stop(self, running: _Running, outcome: Outcome) -> None:
        if running.future.done():
            return
        logger.warning(
            "stopping task id=%s: %s",
            running.job.task_id,
            outcome.error.message if outcome.error else "",
        )
        self._settle(running, outcome)
        running.interrupt(
            TimeLimitExceeded if outcome.state.value == "FAILURE" else TaskRevokedError
        )

    def _settle(self, running: _Running, outcome: Outcome | None) -> None:
        for handle in running.timers:
            handle.cancel()
        running.timers.clear()
        if self._running.get(running.job.lease_id) is running:
            del self._running[running.job.lease_id]
        if not running.future.done():
            if outcome is None:
                running.future.cancel()
            else:
                running.future.set_result(outcome)
