"""Tasks for test_control.py: a task that runs until released, and a task_revoked receiver.

The receiver prints one marker line to the worker's output, which the tests wait on.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from client import Celeriac, Task
from client.signals import task_revoked

app = Celeriac("controlled", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))

POLL = 0.01


@app.task(bind=True)
def hold(self: Task, release_file: str) -> str:
    """Announce the start, then run until ``release_file`` exists (30 s at most)."""
    print(f"RUNNING {self.request.id} pid={os.getpid()}", flush=True)
    deadline = time.monotonic() + 30
    while not Path(release_file).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(POLL)
    return "released"


@app.task(bind=True)
def whereabouts(self: Task) -> dict[str, object]:
    """What the task knows about its delivery: the worker and Celery's delivery_info."""
    return {"hostname": self.request.hostname, "delivery_info": dict(self.request.delivery_info)}


@task_revoked.connect
def on_revoked(
    sender: object = None,
    request: object = None,
    terminated: bool = False,
    signum: object = None,
    expired: bool = False,
    **kwargs: object,
) -> None:
    task_id = getattr(request, "id", "?")
    number = None if signum is None else int(signum)  # type: ignore[call-overload]
    name = getattr(sender, "name", "?")
    print(
        f"REVOKED-SIGNAL {name} {task_id} terminated={terminated} signum={number} "
        f"expired={expired} pid={os.getpid()}",
        file=sys.stderr,
        flush=True,
    )
