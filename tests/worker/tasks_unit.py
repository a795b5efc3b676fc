"""Task bodies for the worker's unit tests (imported by the tests and by pool children)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from client import Celeriac, Task
from client.errors import SoftTimeLimitExceeded

app = Celeriac("worker-unit", broker="127.0.0.1:1")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def collector_settings() -> list[int]:
    """The young-generation threshold and the frozen object count where the task runs."""
    import gc

    return [gc.get_threshold()[0], gc.get_freeze_count()]


@app.task
def pid() -> int:
    return os.getpid()


@app.task
def fail(message: str) -> None:
    raise ValueError(message)


@app.task
def returns_a_set() -> object:
    return {1, 2}


@app.task
async def async_add(x: int, y: int) -> int:
    await asyncio.sleep(0)
    return x + y


@app.task(bind=True)
def whoami(self) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {"id": self.request.id, "retries": self.request.retries, "queue": self.request.queue}


@app.task(
    autoretry_for=(ConnectionError,),
    dont_autoretry_for=(ConnectionRefusedError,),
    max_retries=2,
    default_retry_delay=7,
)
def flaky(kind: str) -> None:
    if kind == "refused":
        raise ConnectionRefusedError("refused")
    raise ConnectionError("reset")


@app.task(autoretry_for=(ConnectionError,), retry_backoff=2, retry_backoff_max=5, max_retries=None)
def backs_off() -> None:
    raise ConnectionError("again")


@app.task(bind=True, max_retries=1)
def explicit_retry(self) -> None:  # type: ignore[no-untyped-def]
    raise self.retry(exc=KeyError("missing"), countdown=3)


@app.task(bind=True)
def reports(self) -> str:  # type: ignore[no-untyped-def]
    self.update_state(state="PROGRESS", meta={"done": 1})
    self.heartbeat(progress=0.5, extend=10)
    return "ok"


@app.task
def wait_for_file(path: str) -> str:
    """Announce the start by creating path + '.started', then wait for path to exist."""
    Path(path + ".started").touch()
    deadline = time.monotonic() + 30
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.01)
    return "released"


@app.task
def sleeps(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@app.task
def catches_soft_limit() -> str:
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "not interrupted"


@app.task
def exits_abruptly() -> None:
    os._exit(3)


@app.task
def pid_then_wait_for_file(path: str) -> str:
    """Write this process's pid to path + '.pid', then run `wait_for_file(path)` in place."""
    Path(path + ".pid").write_text(str(os.getpid()))
    return str(wait_for_file(path))


@app.task
def big(size: int) -> str:
    return "x" * size


@app.task(bind=True)
def reports_big(self, size: int) -> str:  # type: ignore[no-untyped-def]
    self.update_state(state="PROGRESS", meta={"m": "m" * size})
    self.heartbeat(progress="p" * size, extend=10)
    return "ok"


class Expected(Exception):
    """A failure the task declares as expected (``throws``)."""


class Recording(Task):
    """A class-based task whose hooks record what they saw, in the process that ran them."""

    calls: list[tuple[str, ...]] = []
    max_retries = 1  # a class attribute is an option default, as in Celery

    def on_success(self, retval: object, task_id: str, args: object, kwargs: object) -> None:
        self.calls.append(("on_success", repr(retval), task_id, self.request.id))

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("on_failure", repr(exc), task_id, einfo.traceback))

    def on_retry(self, exc, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("on_retry", repr(exc), task_id))

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("after_return", status, repr(retval)))


@app.task(base=Recording)
def hooked(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x * 2


@app.task(base=Recording, autoretry_for=(KeyError,), retry_kwargs={"countdown": 7})
def hooked_retrying() -> None:
    raise KeyError("again")


class BrokenHooks(Task):
    def on_success(self, retval: object, task_id: str, args: object, kwargs: object) -> None:
        raise RuntimeError("a hook that breaks")


@app.task(base=BrokenHooks)
def broken_hooks() -> str:
    return "fine"


@app.task(throws=(Expected,))
def fails_as_expected() -> None:
    raise Expected("card declined")


@app.task(autoretry_for=(KeyError,), retry_kwargs={"max_retries": 1, "countdown": 3})
def retries_per_kwargs() -> None:
    raise KeyError("missing")
