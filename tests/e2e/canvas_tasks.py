"""Tasks of the workflow tests (chain, group, chord, callbacks, replace), run by real workers.

Callbacks that must be observed write a line to a file named in their arguments, and print a
marker the test waits for (no sleeps).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from client import Celeriac, Task, group
from client.errors import InvalidTaskSpec

app = Celeriac("canvas", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def echo(*args: object) -> list[object]:
    return list(args)


@app.task
def fail(*args: object) -> None:
    raise ValueError(f"failed with {list(args)}")


@app.task
def note(*args: object) -> str:
    """Append what it got to the file named last (a parent's result comes first)."""
    *values, path = args
    line = " ".join(map(str, values))
    with Path(str(path)).open("a") as out:
        out.write(line + "\n")
    print(f"NOTED {line}", flush=True)
    return line


@app.task
def old_errback(task_id: str, path: str) -> str:
    """Celery's old errback form: the failed task's id first."""
    return str(note("old", task_id, path))


@app.task
def new_errback(request: object, exc: BaseException, traceback: str, path: str) -> str:
    """Celery 5's errback form: (request, exc, traceback)."""
    task_id = getattr(request, "id", "?")
    return str(note("new", task_id, type(exc).__name__, str(exc), bool(traceback), path))


@app.task
def slow_member(i: int, release: str) -> int:
    """Prints a marker, then waits for ``release`` to exist (a worker can be killed meanwhile)."""
    print(f"MEMBER {i} RUNNING", flush=True)
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return i


@app.task(bind=True)
def replaced(self: Task, x: int) -> None:
    """Replaces itself by a chain; its result becomes the chain's."""
    raise self.replace(add.s(x, 1) | mul.s(10))


@app.task(bind=True)
def replaced_on(self: Task, i: int, release: str, queue: str) -> None:
    """Replaces itself by ``slow_member`` on ``queue`` (another broker's worker, in a test)."""
    raise self.replace(slow_member.s(i, release).set(queue=queue))


@app.task(bind=True)
def fanned_out(self: Task, n: int) -> None:
    """Replaces itself by a group of n members; its result becomes their list (Celery's)."""
    raise self.replace(group(mul.s(i, 10) for i in range(n)))


@app.task(bind=True)
def replaced_by_a_chain_ending_in_a_group(self: Task) -> str:
    """A replacement with no one result: refused before anything is sent."""
    try:
        self.replace(add.s(1, 1) | group(add.s(1), add.s(2)))
    except InvalidTaskSpec as error:
        return str(error)
    return "not refused"
