"""What every execution pool offers the session, and what it is given to run jobs.

A pool runs jobs and resolves one future per job with its `Outcome`. It never talks to the
broker: the session grants credit for `slots`, submits at most `capacity` jobs at a time, and
reports what the futures resolve to. A pool may take more jobs than it has slots (the process
pool batches short tasks); those wait inside it and start in order. Task events (update_state,
heartbeat) reach `PoolContext.on_event` on the event loop's thread, whatever the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from celeriac.logs import LogSettings
from client.task import Task
from worker.execution import ExecutionSettings
from worker.jobs import Job, Outcome, TaskEvent


@dataclass(frozen=True)
class PoolContext:
    """What a pool needs to run jobs.

    Attributes:
        modules: The task modules (process children import them themselves).
        tasks: The task registry of this process.
        settings: Execution settings passed to every job.
        on_event: Called on the loop thread with each task event.
        logs: How child processes log (they configure their own, as the worker did).
    """

    modules: tuple[str, ...]
    tasks: Mapping[str, Task]
    settings: ExecutionSettings
    on_event: Callable[[TaskEvent], None]
    logs: LogSettings = field(default_factory=LogSettings)


class Pool(Protocol):
    """An execution pool: process, thread, async or solo."""

    @property
    def slots(self) -> int:
        """How many jobs the pool runs at once."""
        ...

    @property
    def capacity(self) -> int:
        """How many jobs the pool takes at once (at least `slots`; more when it batches)."""
        ...

    @property
    def pids(self) -> tuple[int, ...]:
        """The child processes' pids (empty for pools that run in the worker's process)."""
        ...

    async def start(self) -> None:
        """Start the pool's workers (child processes are ready when this returns)."""
        ...

    def resize(self, slots: int) -> None:
        """Run up to `slots` jobs at once from now on (`app.control.pool_grow`/`_shrink`).

        Running jobs are never stopped: a slot taken away frees when its job ends.
        """
        ...

    def pid_of(self, lease_id: str) -> int:
        """The pid of the process running this lease's job (0 if it is not running)."""
        ...

    def submit(self, job: Job) -> asyncio.Future[Outcome]:
        """Start a job now; the future resolves with its outcome.

        The future is cancelled when the pool stops the job on shutdown, in which case no
        outcome should be reported (the broker redelivers the task).
        """
        ...

    def terminate(self, lease_id: str, reason: str) -> bool:
        """Stop a running job now; its outcome becomes REVOKED. False if it is not running."""
        ...

    async def close(self, grace: float | None) -> None:
        """Let running jobs finish within `grace` seconds, then stop the rest.

        `grace` None waits forever and 0 stops at once. Stopped jobs have their futures
        cancelled. Every resource (children, threads) is released.
        """
        ...
