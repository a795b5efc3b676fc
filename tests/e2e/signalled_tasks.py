"""A task module that connects Celery's signals the way a user's would, for test_signals.py.

Each receiver prints one marker line (the tests wait on the worker's output); the task signals
only for the task below, so the module's other tasks stay quiet.
"""

from __future__ import annotations

import os
import sys

from client import Celeriac, Task
from client.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_success,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

app = Celeriac("signalled", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))


def mark(text: str) -> None:
    print(f"SIGNAL {text} pid={os.getpid()}", file=sys.stderr, flush=True)


@app.task(bind=True)
def traced(self: Task, divisor: int) -> dict[str, str]:
    """Returns the headers it was sent with (a before_task_publish receiver adds one)."""
    if divisor == 0:
        raise ZeroDivisionError("by zero")
    return dict(self.request.headers)


@worker_process_init.connect
def on_process_init(**kwargs: object) -> None:
    mark("worker_process_init")


@worker_ready.connect
def on_ready(sender: object = None, **kwargs: object) -> None:
    mark(f"worker_ready sender={type(sender).__name__}")


@worker_shutdown.connect
def on_shutdown(**kwargs: object) -> None:
    mark("worker_shutdown")


@task_prerun.connect(sender=traced)
def on_prerun(task_id: str = "", **kwargs: object) -> None:
    mark(f"task_prerun {task_id}")


@task_success.connect(sender=traced)
def on_success(result: object = None, **kwargs: object) -> None:
    mark("task_success")


@task_failure.connect(sender=traced)
def on_failure(task_id: str = "", exception: object = None, **kwargs: object) -> None:
    mark(f"task_failure {task_id} {exception!r}")


@task_postrun.connect(sender=traced)
def on_postrun(task_id: str = "", state: str = "", **kwargs: object) -> None:
    mark(f"task_postrun {task_id} {state}")
