"""The async pool: jobs run as asyncio tasks on the worker's own event loop.

`async def` tasks are awaited directly (concurrency is the number of coroutines in flight);
plain functions run in a thread so they cannot block the loop. A hard time limit or a
terminate-cancel cancels the coroutine (`asyncio.CancelledError` inside the task). Soft time
limits are not raised inside coroutines: set a hard limit, or catch `CancelledError` to clean up.
"""

from __future__ import annotations

import asyncio
import logging
import os

from worker.execution import execute_async, revoked_outcome, time_limit_outcome
from worker.jobs import Job, Outcome, TaskEvent
from worker.pools.base import PoolContext
from worker.task_threads import TaskThreads

logger = logging.getLogger(__name__)


class AsyncPool:
    """Run jobs as coroutines on the running loop."""

    def __init__(self, size: int, context: PoolContext) -> None:
        """Create a pool running up to `size` jobs at once."""
        self._size = size
        self._context = context
        self._tasks: dict[str, asyncio.Task[Outcome]] = {}
        self._revoked: dict[str, str] = {}
        self._threads = TaskThreads(keep_idle=size)  # for sync tasks

    @property
    def slots(self) -> int:
        """How many coroutines run at once."""
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
        """Nothing to start: jobs run on the caller's loop."""

    def resize(self, slots: int) -> None:
        """Run up to `slots` coroutines at once."""
        self._size = slots
        self._threads.keep_idle = slots

    def pid_of(self, lease_id: str) -> int:
        """The worker's pid while the job runs (coroutines share its process)."""
        return os.getpid() if lease_id in self._tasks else 0

    def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Start the job as an asyncio task."""
        task = asyncio.get_running_loop().create_task(
            self._run(job), name=f"celeriac-task-{job.task_id}"
        )
        self._tasks[job.lease_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.lease_id, None))
        return task

    def terminate(self, lease_id: str, reason: str) -> bool:
        """Cancel the job's coroutine; its outcome becomes REVOKED."""
        task = self._tasks.get(lease_id)
        if task is None:
            return False
        self._revoked[lease_id] = reason
        task.cancel()
        return True

    async def close(self, grace: float | None) -> None:
        """Wait up to `grace` for running jobs, then cancel the rest."""
        tasks = list(self._tasks.values())
        if tasks and grace != 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._threads.close()

    async def _run(self, job: Job) -> Outcome:
        context = self._context
        loop = asyncio.get_running_loop()

        def sink(event: TaskEvent) -> None:
            # Sync tasks run in a thread; hop back to the loop either way.
            loop.call_soon_threadsafe(context.on_event, event)

        try:
            async with asyncio.timeout(job.time_limit):
                return await execute_async(
                    job, context.tasks, sink, context.settings, threads=self._threads
                )
        except TimeoutError:
            return time_limit_outcome(job)
        except asyncio.CancelledError:
            reason = self._revoked.pop(job.lease_id, None)
            if reason is None:
                raise  # cancelled by close(): no outcome, the broker redelivers
            return revoked_outcome(job, reason)
