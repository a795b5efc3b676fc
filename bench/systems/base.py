"""What a scenario needs from a task queue under test: start it, submit, collect, inspect."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Both systems default their process pool to the CPU count; so do we.
CPU_COUNT = os.cpu_count() or 1
# Generous bound for collecting one batch; a benchmark that hangs is worse than one that fails.
COLLECT_TIMEOUT = 600.0


class DidNotFinish(Exception):
    """A run was still going at its time limit: its row reads "did not finish in N s".

    The runner stops that system at once (its processes may still be busy with the run) and
    measures it no further in that variant.
    """

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"did not finish in {seconds:g} s ({what})")
        self.seconds = seconds


def collect(what: str, pending: Waitable, timeout: float) -> Any:
    """``pending.get(timeout)``, raising DidNotFinish when the time runs out.

    Both clients' timeouts are caught: Celeriac's is a builtin ``TimeoutError``; Celery's
    ``celery.exceptions.TimeoutError`` is not, so it is recognised by name (the harness does not
    import Celery unless it runs it).
    """
    try:
        return pending.get(timeout=timeout)
    except Exception as error:
        if isinstance(error, TimeoutError) or type(error).__name__ == "TimeoutError":
            raise DidNotFinish(what, timeout) from None
        raise


def check_answer(what: str, answer: object, expected: object) -> None:
    """Fail the run when a workflow's final result is not what it must be."""
    if answer != expected:
        raise AssertionError(f"{what} returned {answer!r}, expected {expected!r}")


class Unsupported(Exception):
    """The system has no equivalent of this deployment (e.g. Celery has no asyncio pool)."""


@dataclass(frozen=True)
class Deployment:
    """What to run beside the broker for one scenario variant.

    Attributes:
        pool: Celeriac's pool name (process, thread, async, solo); systems map it to theirs.
        concurrency: execution slots per worker.
        workers: real worker processes; 0 runs the broker alone (enqueue, memory).
        fake_workers: lightweight in-protocol workers in one extra process (Celeriac only).
        queues: queues the workers consume.
        prefetch: tasks a worker may hold beyond those it runs; None keeps each system's
            default (Celery: 4 per slot; Celeriac: adaptive, up to 500). Celery's is set as
            its per-slot multiplier, ``prefetch // concurrency``.
    """

    pool: str = "process"
    concurrency: int = CPU_COUNT
    workers: int = 1
    fake_workers: int = 0
    queues: Sequence[str] = field(default_factory=lambda: ("default",))
    prefetch: int | None = None


class Pending(Protocol):
    """Results of a batch submit, collected all at once."""

    def get(self, timeout: float) -> list[object]: ...


class Waitable(Protocol):
    """A batch's results or one workflow's result."""

    def get(self, timeout: float) -> Any: ...


class System(Protocol):
    """One task queue under test (broker, workers and a client in this process)."""

    name: str

    def start(self, deployment: Deployment) -> None:
        """Start the broker and workers and connect the client; return once all are ready.

        Raises:
            Unsupported: the system cannot run this deployment.
        """

    def stop(self) -> None:
        """Stop every process this system started (safe to call twice, or after a failed start)."""

    def start_workers(self, deployment: Deployment) -> None:
        """Start ``deployment.workers`` more real workers; return once they can take tasks."""

    def stop_workers(self) -> None:
        """Stop every worker (a warm shutdown), leaving the broker running."""

    def ready_count(self) -> int:
        """Tasks waiting in the default queue for a worker to take them."""

    def submit_one(self, ignore_result: bool = False) -> None:
        """Submit one no-op task the way users do one at a time (`noop.delay()`).

        With ``ignore_result`` the way fire-and-forget users do: no result is stored or awaited.
        """

    def submit_batch(
        self, count: int, queue: str | None = None, ignore_result: bool = False
    ) -> Pending:
        """Submit `count` no-op tasks through the batch path (`group(...).apply_async()`).

        With ``ignore_result`` the tasks store no result and nobody can wait for one.
        """

    def submit_stamped(self, count: int) -> Pending:
        """Submit ``count`` rate-limited ``bench.stamped`` tasks (bench.limits.STAMPED_RATE);
        each result is the wall time it started."""

    def round_trip(self) -> None:
        """`add.delay(1, 2).get()`, checking the answer."""

    def run_chord(self, members: int, timeout: float) -> None:
        """`chord(noop.s() for each member)(count.s()).get()`, checking the count.

        Raises:
            DidNotFinish: No result within ``timeout`` seconds.
        """

    def run_chain(self, links: int, timeout: float) -> None:
        """`chain(inc.s(0), inc.s(), ...)` of ``links`` links, `.get()`, checking the sum.

        Raises:
            DidNotFinish: No result within ``timeout`` seconds.
        """

    def purge(self) -> None:
        """Drop every queued task, so one run's leftovers do not weigh on the next."""

    def roles(self) -> dict[str, list[int]]:
        """Root pids per role ("broker", "worker"); CPU is summed over their descendants."""

    def broker_rss(self) -> int:
        """RSS in bytes of the process that holds the queues and results."""
