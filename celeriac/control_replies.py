"""Inspect and control over the wire: requests built, replies read in Celery's shape.

Shared by the client (``app.control``, ``inspect()``) and the broker's CLI (``python -m broker
inspect``), so both show the same thing.

Celery's inspect replies are plain dicts keyed by worker name; the task entries are Celery's
request dicts (``id``, ``name``, ``args``, ``kwargs``, ``type``, ``hostname``, ``time_start``,
``acknowledged``, ``delivery_info``, ``worker_pid``), built here from the wire's TaskSummary.
"""

from __future__ import annotations

import signal as signal_module
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any

from celeriac.v1 import admin_pb2, worker_pb2

# Decodes a task's argument payload into (args, kwargs); raises when it cannot.
ArgsDecoder = Callable[[bytes, str], tuple[list[object], dict[str, object]]]

COMMANDS: dict[str, worker_pb2.ControlCommand.ValueType] = {
    name.removeprefix("CONTROL_COMMAND_").lower(): number
    for name, number in worker_pb2.ControlCommand.items()
    if number != worker_pb2.CONTROL_COMMAND_UNSPECIFIED
}


def request(
    command: str,
    destination: Sequence[str],
    timeout: float,
    *,
    count: int = 0,
    task_ids: Sequence[str] = (),
) -> admin_pb2.ControlWorkersRequest:
    """The ControlWorkers request for ``command`` (a key of COMMANDS)."""
    return admin_pb2.ControlWorkersRequest(
        command=COMMANDS[command],
        destination=list(destination),
        timeout_ms=max(1, round(timeout * 1000)),
        count=count,
        task_ids=list(task_ids),
    )


def replies(
    response: admin_pb2.ControlWorkersResponse, command: str, decode: ArgsDecoder
) -> dict[str, Any]:
    """Each answering worker's reply, in Celery's shape for ``command``."""
    shaped: dict[str, Any] = {}
    for answer in response.answers:
        reply, worker = answer.reply, answer.worker_id
        if reply.error:
            shaped[worker] = {"error": reply.error}
        elif command in ("active", "reserved"):
            shaped[worker] = [task_dict(t, worker, decode) for t in reply.tasks]
        elif command == "query_task":
            shaped[worker] = {
                t.task_id: [t.status, task_dict(t, worker, decode)] for t in reply.tasks
            }
        elif command == "registered":
            shaped[worker] = list(reply.task_names)
        elif command == "stats":
            shaped[worker] = stats_dict(reply.stats)
        elif command == "active_queues":
            shaped[worker] = [queue_dict(name) for name in reply.queues]
        else:  # ping, shutdown, pool_grow, pool_shrink
            shaped[worker] = {"ok": reply.message}
    return shaped


def scheduled(
    response: admin_pb2.ControlWorkersResponse, decode: ArgsDecoder
) -> list[dict[str, Any]]:
    """The broker's scheduled tasks as Celery's ``scheduled()`` entries: eta, priority, request."""
    return [
        {
            "eta": t.eta.ToDatetime(tzinfo=UTC).isoformat() if t.HasField("eta") else None,
            "priority": t.priority,
            "request": task_dict(t, "", decode),
        }
        for t in response.scheduled
    ]


def task_dict(task: worker_pb2.TaskSummary, worker: str, decode: ArgsDecoder) -> dict[str, Any]:
    """Celery's request dict for one task (args None when omitted or not decodable here)."""
    args: list[object] | None = None
    kwargs: dict[str, object] | None = None
    if not task.args_omitted and task.args.body:
        try:
            args, kwargs = decode(task.args.body, task.args.content_type)
        except Exception:  # pickle this client may not load, or a malformed body
            args, kwargs = None, None
    started = task.HasField("started_at")
    return {
        "id": task.task_id,
        "name": task.name,
        "args": args,
        "kwargs": kwargs,
        "type": task.name,
        "hostname": worker,
        "time_start": task.started_at.ToNanoseconds() / 1e9 if started else None,
        "acknowledged": started,
        "delivery_info": {
            "exchange": "",
            "routing_key": task.queue,
            "priority": task.priority,
            "redelivered": task.attempt > 1,
        },
        "worker_pid": task.worker_pid or None,
        "headers": dict(task.headers),
        "retries": task.retries,
    }


def stats_dict(stats: worker_pb2.WorkerStats) -> dict[str, Any]:
    """Celery's stats() dict, with the figures a Celeriac worker has."""
    return {
        "pid": stats.pid,
        "hostname": stats.hostname,
        "uptime": round(stats.uptime_seconds, 3),
        "total": dict(stats.total),
        "pool": {
            "implementation": stats.pool,
            "max-concurrency": stats.concurrency,
            "processes": list(stats.child_pids),
        },
        "prefetch_count": stats.reserved,
        "active": stats.active,
        "rusage": {
            "utime": stats.user_cpu_seconds,
            "stime": stats.system_cpu_seconds,
            "maxrss": stats.max_rss_kb,
        },
        "sw_ver": stats.version,
    }


def queue_dict(name: str) -> dict[str, Any]:
    """Celery's active_queues() entry for a queue (no exchanges here: the name routes)."""
    return {"name": name, "routing_key": name, "exchange": {"name": "", "type": "direct"}}


def signal_number(signal: str | int) -> int:
    """The number of a signal given as Celery takes it (``"SIGTERM"``, ``"TERM"``, ``15``).

    Raises:
        ValueError: It names no signal.
    """
    if isinstance(signal, int):
        return int(signal_module.Signals(signal))
    name = signal.upper()
    try:
        return int(signal_module.Signals[name if name.startswith("SIG") else "SIG" + name])
    except KeyError:
        raise ValueError(f"unknown signal {signal!r}") from None
