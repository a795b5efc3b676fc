"""Run a real worker inside a test: ``with running_worker(app, broker.address): ...``.

The worker runs the tasks of an app (or of task modules) with a thread pool, on its own event
loop in a background thread, over a real gRPC stream to the broker: the same code path as
``python -m worker``, without a process per test. With ``broker.testing.running_broker()`` it is
what the pytest fixtures of :mod:`celeriac.pytest_plugin` are made of, and what this project's
own tests use.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from client.app import Celeriac
from worker import loader, pools
from worker.config import WorkerConfig
from worker.execution import ExecutionSettings
from worker.jobs import TaskEvent
from worker.runner import Worker

_STOP_TIMEOUT = 20.0


class RunningWorker:
    """A worker serving in a background thread.

    Args:
        tasks: The app whose tasks it runs, or task module names to import (``--tasks``).
        broker: The broker's address.
        pool: ``thread`` (default), ``async`` or ``solo``; the process pool needs a real
            ``python -m worker`` process.
        concurrency: Task slots.
        **settings: Any other :class:`~worker.config.WorkerConfig` field (``queues=``, ...).

    Attributes:
        worker: The :class:`~worker.runner.Worker` (read it on :attr:`loop` only).
        loop: The worker's event loop.
    """

    def __init__(
        self,
        tasks: Celeriac | Sequence[str],
        broker: str,
        *,
        pool: str = "thread",
        concurrency: int = 2,
        **settings: Any,
    ) -> None:
        modules = () if isinstance(tasks, Celeriac) else tuple(tasks)
        config = WorkerConfig.from_env(
            {}, tasks=modules, broker=broker, concurrency=concurrency, pool=pool, **settings
        )
        if isinstance(tasks, Celeriac):
            registry = loader.Registry(
                tasks=dict(tasks.tasks), apps=(tasks,), periodic=loader.periodic_tasks((tasks,))
            )
        else:
            registry = loader.load(config.tasks)
        self.loop = asyncio.new_event_loop()
        context = pools.PoolContext(
            modules=config.tasks,
            tasks=registry.tasks,
            settings=ExecutionSettings(config.hostname or "celeriac@test"),
            on_event=self._forward,
        )
        self.worker = Worker(config, registry, pools.create(pool, concurrency, context), broker)
        self._thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.worker.run(),), daemon=True
        )

    def _forward(self, event: TaskEvent) -> None:
        self.worker.on_task_event(event)  # the pool is built before the worker it reports to

    def start(self) -> None:
        """Start serving (it connects and takes tasks in the background)."""
        self._thread.start()

    def stop(self) -> None:
        """Warm shutdown: running tasks finish, then the thread ends.

        Raises:
            RuntimeError: The worker did not stop within 20 s.
        """
        self.loop.call_soon_threadsafe(self.worker.shutdown)
        self._thread.join(_STOP_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(f"the worker did not stop within {_STOP_TIMEOUT:g} s")
        self.loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_worker(
    tasks: Celeriac | Sequence[str], broker: str, **options: Any
) -> Iterator[RunningWorker]:
    """A :class:`RunningWorker` for the duration of a ``with`` block (options as its own)."""
    with RunningWorker(tasks, broker, **options) as worker:
        yield worker
