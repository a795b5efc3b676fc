"""What the dashboard's JSON API answers, read from the broker's facade (as AdminService does).

Functions named ``read_*`` run on the broker's loop and only copy plain values out of the core;
payloads leave the loop as they are (immutable bytes) and are decoded for display in the
request's thread by :func:`payload_view`, so a large argument never holds up the loop.
"""

from __future__ import annotations

import json
from typing import Any

from broker.core.broker import Broker
from broker.core.model import Payload, TaskRecord
from broker.service.web._stats import TaskStats

JSON_TYPE = "application/json"
# Payloads larger than this are described (type, size, first bytes), not decoded.
MAX_DECODED_BYTES = 256 * 1024
PREVIEW_BYTES = 64
# Dead letters listed per page.
DEAD_LETTER_PAGE = 100

View = dict[str, Any]


def read_overview(core: Broker, stats: TaskStats) -> View:
    """Queues with depths and rates, workers with their running tasks, the dead-letter count."""
    now = core.clock.time()
    rates = stats.queue_rates(now)
    queues = []
    for queue in core.queue_stats():
        rate_in, rate_out = rates.get(queue.name, (0.0, 0.0))
        queues.append(
            {
                "name": queue.name,
                "queued": queue.ready,
                "scheduled": queue.scheduled,
                "leased": queue.leased,
                "consumers": queue.consumers,
                "rate_in": rate_in,
                "rate_out": rate_out,
            }
        )
    _, dead = core.dead_letters(limit=1)
    return {"now": now, "queues": queues, "workers": read_workers(core), "dead_letters": dead}


def read_series(core: Broker, stats: TaskStats) -> View:
    """Second by second: tasks accepted, succeeded and failed, and runtime percentiles."""
    now = core.clock.time()
    return {"now": now, "seconds": stats.series(now)}


def read_workers(core: Broker) -> list[View]:
    """Connected workers, each with the tasks it runs."""
    workers = []
    for session in core.open_sessions():
        hello = session.hello
        running = [
            {
                "task_id": lease.record.task_id,
                "name": lease.record.spec.name,
                "queue": lease.record.spec.queue,
                "attempt": lease.attempt,
            }
            for lease in session.leases.values()
        ]
        workers.append(
            {
                "worker_id": hello.worker_id,
                "hostname": hello.hostname,
                "pid": hello.pid,
                "pool": hello.pool,
                "concurrency": hello.concurrency,
                "queues": list(session.queues),
                "connected_at": session.connected_at,
                "draining": session.draining,
                "running": running,
            }
        )
    return workers


def read_task(core: Broker, task_id: str) -> tuple[View, dict[str, Payload | None]] | None:
    """A task's facts and its payloads (decoded later), or None when the broker has no record."""
    record = core.get(task_id)
    if record is None:
        return None
    return _task_facts(record), {
        "args": record.args,
        "result": record.result,
        "progress": record.progress,
    }


def read_dead_letters(core: Broker, queue: str) -> View:
    """The oldest dead letters (a page of them) and how many there are."""
    listed, total = core.dead_letters(queue, DEAD_LETTER_PAGE)
    return {
        "total": total,
        "dead_letters": [{**_task_facts(record), "dead_at": at} for record, at in listed],
    }


def _task_facts(record: TaskRecord) -> View:
    error = record.error
    spec = record.spec
    return {
        "task_id": record.task_id,
        "name": spec.name,
        "queue": spec.queue,
        "state": record.custom_state or record.state.value,
        "phase": record.phase.value,
        "attempts": record.attempts,
        "retries": record.retries,
        "worker_id": record.worker_id,
        "dead_lettered": record.dead_lettered,
        "date_done": record.date_done,
        "eta": record.due,
        "expires": spec.expires,
        "priority": spec.priority,
        "headers": dict(spec.headers),
        "error": None
        if error is None
        else {
            "type": error.type,
            "message": error.message,
            "traceback": error.traceback,
            "kind": error.kind.value,
        },
    }


def payload_view(payload: Payload | None, arguments: bool = False) -> View | None:
    """``payload`` for display: decoded when it is JSON of a sane size, else described.

    Args:
        payload: The bytes and their content type, or None (none kept).
        arguments: Whether it is a task's arguments, whose JSON is ``[args, kwargs]``.
    """
    if payload is None:
        return None
    body = payload.body
    view: View = {"content_type": payload.content_type, "size": len(body)}
    if payload.content_type == JSON_TYPE and len(body) <= MAX_DECODED_BYTES:
        try:
            value = json.loads(body) if body else None
        except ValueError:
            view["note"] = "not valid JSON"
        else:
            if arguments and isinstance(value, list) and _is_arguments(value):
                view["args"], view["kwargs"] = value[0], value[1]
            else:
                view["value"] = value
            return view
    view["preview"] = body[:PREVIEW_BYTES].hex(" ")
    return view


def _is_arguments(value: list[Any]) -> bool:
    return len(value) == 2 and isinstance(value[0], list) and isinstance(value[1], dict)
