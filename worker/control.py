"""What a worker answers to the broker's inspect and control requests (Celery's app.control).

The broker sends a `Control` down the session (AdminService.ControlWorkers); the runner turns
it into a `ControlReply` with the helpers here and sends it back at once, from the event loop,
so a worker whose loop is alive always answers, however busy its pool is. Protobuf stays in
`worker.codec`.
"""

from __future__ import annotations

import dataclasses
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from client.task import BUILTIN_PREFIX
from worker.jobs import Job

# A reply carries task arguments up to this share of the broker's message limit; past it the
# remaining tasks are listed without their arguments (TaskSummary.args_omitted).
_ARGS_SHARE = 4

# Command names, as the wire's ControlCommand values are named after them.
PING = "ping"
ACTIVE = "active"
RESERVED = "reserved"
REGISTERED = "registered"
STATS = "stats"
ACTIVE_QUEUES = "active_queues"
QUERY_TASK = "query_task"
SHUTDOWN = "shutdown"
POOL_GROW = "pool_grow"
POOL_SHRINK = "pool_shrink"


@dataclass(frozen=True)
class Control:
    """One inspect or control request from the broker."""

    request_id: str
    # One of the names above; "" for a command this worker does not know.
    command: str
    count: int = 1
    task_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeldTask:
    """A task the worker holds, as inspect shows it."""

    job: Job
    # "active" (running) or "reserved" (buffered, not started).
    status: str
    # Wall time it started (running tasks only), and the process running it.
    started_at: float | None = None
    pid: int = 0
    args_omitted: bool = False


@dataclass(frozen=True)
class Stats:
    """The worker's figures (inspect().stats())."""

    pid: int
    hostname: str
    pool: str
    concurrency: int
    child_pids: tuple[int, ...]
    uptime: float
    total: Mapping[str, int]
    reserved: int
    active: int
    user_cpu: float
    system_cpu: float
    max_rss_kb: int
    version: str


@dataclass(frozen=True)
class ControlReply:
    """The answer to one `Control`; `error` set means it was not carried out."""

    request_id: str
    error: str = ""
    tasks: tuple[HeldTask, ...] = ()
    task_names: tuple[str, ...] = ()
    stats: Stats | None = None
    queues: tuple[str, ...] = ()
    concurrency: int = 0
    message: str = ""


@dataclass
class TaskCounts:
    """Attempts finished since the worker started, by task name (stats()["total"])."""

    by_name: dict[str, int] = field(default_factory=dict)

    def add(self, name: str) -> None:
        """Count one finished attempt of ``name``."""
        self.by_name[name] = self.by_name.get(name, 0) + 1


def held_tasks(held: Iterable[HeldTask], max_message_bytes: int) -> tuple[HeldTask, ...]:
    """The tasks for a reply, the later ones without arguments once the reply would grow large.

    A reply must fit one message to the broker (a larger one would end the session), and a
    worker may hold hundreds of tasks with large arguments.
    """
    budget = max_message_bytes // _ARGS_SHARE
    listed = []
    for task in held:
        budget -= len(task.job.args.body)
        listed.append(task if budget >= 0 else dataclasses.replace(task, args_omitted=True))
    return tuple(listed)


class Controllable(Protocol):
    """What a worker shows `answer` (the runner's Worker)."""

    @property
    def slots(self) -> int:
        """The pool's execution slots now."""
        ...

    @property
    def task_names(self) -> tuple[str, ...]:
        """The registered task names, sorted."""
        ...

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues consumed, in order."""
        ...

    def held(self) -> list[HeldTask]:
        """The running tasks, then the reserved ones, in the order they were taken."""
        ...

    def stats(self) -> Stats:
        """The worker's figures now."""
        ...

    def resize_pool(self, slots: int) -> int:
        """Change the pool to ``slots`` slots; returns the slots it has after the change."""
        ...

    def warm_shutdown(self) -> None:
        """Begin a warm shutdown (once: asking again never makes it a cold one)."""
        ...


def answer(worker: Controllable, control: Control, max_message_bytes: int) -> ControlReply:
    """Carry out ``control`` and say how it went."""
    rid = control.request_id
    command = control.command
    if command == PING:
        return ControlReply(rid, message="pong")
    if command in (ACTIVE, RESERVED, QUERY_TASK):
        held = worker.held()
        if command == QUERY_TASK:
            wanted = set(control.task_ids)
            chosen = [task for task in held if task.job.task_id in wanted]
        else:
            chosen = [task for task in held if task.status == command]
        return ControlReply(rid, tasks=held_tasks(chosen, max_message_bytes))
    if command == REGISTERED:
        # Celery leaves its built-in tasks (celery.accumulate) out of registered() too.
        names = tuple(name for name in worker.task_names if not name.startswith(BUILTIN_PREFIX))
        return ControlReply(rid, task_names=names)
    if command == STATS:
        return ControlReply(rid, stats=worker.stats())
    if command == ACTIVE_QUEUES:
        return ControlReply(rid, queues=worker.queues)
    if command in (POOL_GROW, POOL_SHRINK):
        return _resize(worker, rid, command, control.count)
    if command == SHUTDOWN:
        worker.warm_shutdown()
        return ControlReply(rid, message="shutting down")
    return ControlReply(rid, error=f"this worker does not know the command {command!r}")


def _resize(worker: Controllable, rid: str, command: str, count: int) -> ControlReply:
    slots = worker.slots
    target = slots + count if command == POOL_GROW else slots - count
    if target < 1:
        return ControlReply(
            rid, error=f"cannot shrink the pool by {count}: it has {slots} slot(s) and keeps one"
        )
    now = worker.resize_pool(target)
    verb = "grow" if command == POOL_GROW else "shrink"
    return ControlReply(rid, concurrency=now, message=f"pool will {verb}")


def process_figures() -> tuple[float, float, int]:
    """This process's user and system CPU seconds and its peak RSS in kilobytes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_maxrss
