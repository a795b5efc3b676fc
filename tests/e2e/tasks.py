"""Task bodies the end-to-end tests run in real worker processes.

The broker address comes from CELERIAC_BROKER (the tests set it); workers get it from --broker.
Tasks that must block until the test lets them go wait for a file to appear, and print a marker
line first, so the test can wait on the worker's output instead of sleeping.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
import time
from pathlib import Path

from client import Celeriac, Task
from client.errors import SoftTimeLimitExceeded

app = Celeriac("e2e", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))

POLL = 0.01


def _wait_for_file(path: str, limit: float = 30.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if Path(path).exists():
            return True
        time.sleep(POLL)
    return False


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def fan_out(count: int) -> list[str]:
    """Submit `count` adds from inside a task (a pool child forked from the worker's fork
    server, whose gRPC was imported but never used) and return their ids."""
    return [add.delay(index, index).id for index in range(count)]


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def chatty(text: str) -> str:
    """Prints as a user's task does: to stdout, and a two-line note to stderr."""
    print(f"said: {text}")
    sys.stderr.write(f"noted: {text}\nsecond line\n")
    return text


@app.task
def returns_a_set() -> object:
    return {1, 2, 3}


@app.task(bind=True)
def block_first_attempt(self, marker: str) -> str:  # type: ignore[no-untyped-def]
    """On its first delivery, announce itself and hang; on a redelivery, finish."""
    if self.request.attempt == 1:
        print(f"BLOCKING {self.request.id}", flush=True)
        time.sleep(300)
    return f"done on attempt {self.request.attempt}"


@app.task(bind=True)
def wait_for_release(self, release_file: str) -> str:  # type: ignore[no-untyped-def]
    """Announce the start, then finish once release_file exists."""
    print(f"RUNNING {self.request.id}", flush=True)
    if not _wait_for_file(release_file):
        raise TimeoutError("never released")
    return "released"


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=3, default_retry_delay=0.05)
def flaky(self, succeed_on_retry: int) -> int:  # type: ignore[no-untyped-def]
    """Raise ConnectionError until the given retry number, then return it."""
    if self.request.retries < succeed_on_retry:
        raise ConnectionError(f"flaky on retry {self.request.retries}")
    return int(self.request.retries)


@app.task(bind=True, max_retries=2)
def explicit_retry(self) -> int:  # type: ignore[no-untyped-def]
    """Ask for a retry through self.retry() until the retries run out."""
    raise self.retry(exc=KeyError("still missing"), countdown=0.05)


@app.task(time_limit=1.0)
def hangs_past_hard_limit() -> None:
    time.sleep(300)


@app.task(soft_time_limit=0.3, time_limit=10)
def cleans_up_on_soft_limit() -> str:
    try:
        time.sleep(300)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task(bind=True)
def reports_progress(self, release_file: str) -> str:  # type: ignore[no-untyped-def]
    self.update_state(state="PROGRESS", meta={"done": 1, "total": 2})
    if not _wait_for_file(release_file):
        raise TimeoutError("never released")
    return "finished"


@app.task
def record(path: str, label: str) -> str:
    """Append label to a file: the file's lines show the order tasks ran in."""
    with open(path, "a") as out:
        out.write(label + "\n")
    return label


@app.task(time_limit=1.0)
def holds_lock_past_hard_limit(lock_path: str) -> None:
    """Take an exclusive file lock, announce it, and hang past the hard limit while holding it."""
    handle = open(lock_path, "w")  # noqa: SIM115 - held open until the process is killed
    fcntl.flock(handle, fcntl.LOCK_EX)
    print(f"LOCKED {lock_path}", flush=True)
    time.sleep(300)


@app.task
def try_lock(lock_path: str) -> str:
    """Take the same lock without waiting: succeeds only if nobody holds it."""
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "still held"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return "acquired"


@app.task
def sized_result(size: int) -> str:
    """A result of `size` characters (over the broker's payload limit, in the limit tests)."""
    return "x" * size


class Audited(Task):
    """A class-based task whose failure hook writes what it saw to the task's ``audit`` file."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        line = f"{task_id}|{exc!r}|{os.getpid()}|{self.request.id}"
        Path(kwargs["audit"]).write_text(line)


@app.task(base=Audited)
def audited_divide(x: float, y: float, audit: str) -> float:
    return x / y
