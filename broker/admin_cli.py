"""Admin sub-commands of ``python -m broker``: they call AdminService on a running broker."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from broker import control_cli
from celeriac.address import DEFAULT_ADDRESS, Address, parse_address
from celeriac.cli import usage_error
from celeriac.connection import ChannelSecurity, open_channel
from celeriac.settings import InvalidSetting, is_address
from celeriac.v1 import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc, tasks_pb2

RET_OK = 0
RET_ERROR = 1
RET_UNAVAILABLE = 3
CALL_TIMEOUT = 10.0
ENV_BROKER = "CELERIAC_BROKER"


def add_commands(commands: Any) -> None:
    """Register the admin sub-commands on the CLI's sub-parser collection."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--broker", help=f"broker address (default: $CELERIAC_BROKER, else {DEFAULT_ADDRESS})"
    )
    env = os.environ.get
    common.add_argument("--tls-ca", default=env("CELERIAC_TLS_CA", ""), help="PEM CA bundle")
    common.add_argument("--tls-cert", default=env("CELERIAC_TLS_CERT", ""), help="PEM client cert")
    common.add_argument("--tls-key", default=env("CELERIAC_TLS_KEY", ""), help="its PEM key")
    common.add_argument(
        "--token", default=env("CELERIAC_TOKEN", ""), help="admin bearer token (CELERIAC_TOKEN)"
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    commands.add_parser("queues", parents=[common], help="list queues and their depths")
    commands.add_parser("workers", parents=[common], help="list connected workers")
    dead = commands.add_parser("dead", parents=[common], help="list, requeue or purge dead letters")
    dead.add_argument("action", choices=["list", "requeue", "purge"])
    dead.add_argument("task_ids", nargs="*", help="ids to requeue or purge")
    dead.add_argument("--all", action="store_true", help="every dead letter (of --queue)")
    dead.add_argument("--queue", default="", help="only this queue")
    dead.add_argument("--limit", type=int, default=0, help="list at most this many (0: all)")
    purge = commands.add_parser("purge", parents=[common], help="drop every ready task of a queue")
    purge.add_argument("queue")
    purge.add_argument(
        "--force", "-f", action="store_true", help="do not ask (needed when stdin is no terminal)"
    )
    task = commands.add_parser("task", parents=[common], help="look a task up by id")
    task.add_argument("task_id")
    commands.add_parser("info", parents=[common], help="the broker's version, limits, refusals")
    periodic = commands.add_parser(
        "periodic", parents=[common], help="list periodic tasks, or remove one by name"
    )
    periodic.add_argument("action", choices=["list", "remove"])
    periodic.add_argument("name", nargs="?", help="the entry to remove")
    events = commands.add_parser(
        "events", parents=[common], help="tail task and worker events (Ctrl-C ends)"
    )
    events.add_argument("--queue", action="append", default=[], help="only this queue (repeat)")
    events.add_argument("--task", action="append", default=[], help="only this task name (repeat)")
    events.add_argument(
        "--kind", action="append", default=[], help="only this kind, e.g. failed (repeat)"
    )
    control_cli.add_commands(commands, common)


def run(args: argparse.Namespace) -> int:
    """Run one admin command; returns the exit code."""
    try:
        address = _broker_address(args.broker)
        security = ChannelSecurity.for_address(
            address, args.tls_ca, args.tls_cert, args.tls_key, args.token
        )
        channel = open_channel(address.target, security, ())
    except ValueError as error:  # InvalidSetting, an unreadable certificate
        return usage_error(error)
    if args.command == "dead" and args.limit < 0:
        return usage_error(f"--limit {args.limit} must not be negative")
    try:
        with channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            if args.command == "events":
                return _events(stub, args)
            if args.command in ("inspect", "control"):
                return control_cli.run(channel, args)
            if args.command in {"task", "info"}:
                return _task_service_command(client_pb2_grpc.TaskServiceStub(channel), args)
            return _dispatch(stub, args)
    except KeyboardInterrupt:
        return RET_OK
    except grpc.RpcError as error:
        code = error.code()
        print(f"error: {code.name}: {error.details()}", file=sys.stderr)
        return RET_UNAVAILABLE if code == grpc.StatusCode.UNAVAILABLE else RET_ERROR


def _broker_address(flag: str | None) -> Address:
    """The address from --broker, else CELERIAC_BROKER, else the default; errors name the source.

    A blank variable counts as unset, as it does for the worker and the client.
    """
    if flag is not None:
        label, text = "--broker", flag
    else:
        label, text = f"{ENV_BROKER}=", os.environ.get(ENV_BROKER, "").strip() or DEFAULT_ADDRESS
    problem = is_address(text, None)
    if problem is not None:
        raise InvalidSetting.about(label, text, problem)
    return parse_address(text)


def _dispatch(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace) -> int:
    if args.command == "queues":
        queues = stub.ListQueues(admin_pb2.ListQueuesRequest(), timeout=CALL_TIMEOUT).queues
        _show(
            args,
            ("name", "ready", "scheduled", "leased", "consumers"),
            ("QUEUE", "READY", "SCHEDULED", "LEASED", "CONSUMERS"),
            [(q.name, q.ready, q.scheduled, q.leased, q.consumers) for q in queues],
        )
    elif args.command == "workers":
        workers = stub.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=CALL_TIMEOUT).workers
        _show(
            args,
            ("worker_id", "queues", "pool", "concurrency", "credit", "leased", "draining"),
            ("WORKER", "QUEUES", "POOL", "CONCURRENCY", "CREDIT", "LEASED", "DRAINING"),
            [
                (
                    w.worker_id,
                    list(w.queues),
                    w.pool,
                    w.concurrency,
                    w.credit,
                    w.leased,
                    w.draining,
                )
                for w in workers
            ],
        )
    elif args.command == "purge":
        return _purge(stub, args)
    elif args.command == "periodic":
        return _periodic(stub, args)
    else:
        return _dead(stub, args)
    return RET_OK


def _purge(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace) -> int:
    """Purge a queue the broker knows, once confirmed: on a terminal, or by ``--force``."""
    queues = stub.ListQueues(admin_pb2.ListQueuesRequest(), timeout=CALL_TIMEOUT).queues
    known = {q.name: q for q in queues}
    if args.queue not in known:
        names = ", ".join(sorted(known)) or "none"
        print(
            f"error: the broker has no queue {args.queue!r} (its queues: {names})", file=sys.stderr
        )
        return RET_ERROR
    if not args.force:
        if not sys.stdin.isatty():
            return usage_error(
                f"purge drops the ready tasks of {args.queue!r} for good: pass -f/--force to "
                "confirm (stdin is not a terminal, so there is no one to ask)"
            )
        ready = known[args.queue].ready
        answer = input(f"drop the {ready} ready task(s) of {args.queue!r} for good? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing purged")
            return RET_ERROR
    purged = stub.PurgeQueue(admin_pb2.PurgeQueueRequest(queue=args.queue), timeout=CALL_TIMEOUT)
    _say(
        args,
        f"purged {purged.purged} task(s) from {args.queue}",
        queue=args.queue,
        purged=purged.purged,
    )
    return RET_OK


def _periodic(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace) -> int:
    if args.action == "remove":
        if not args.name:
            return usage_error("periodic remove needs the entry's name")
        request = admin_pb2.RemovePeriodicTaskRequest(name=args.name)
        if not stub.RemovePeriodicTask(request, timeout=CALL_TIMEOUT).removed:
            print(f"error: no periodic task named {args.name!r}", file=sys.stderr)
            return RET_ERROR
        _say(args, f"removed periodic task {args.name}", removed=args.name)
        return RET_OK
    listing = stub.ListPeriodicTasks(admin_pb2.ListPeriodicTasksRequest(), timeout=CALL_TIMEOUT)
    _show(
        args,
        ("name", "task", "schedule", "last_run", "next_tick"),
        ("NAME", "TASK", "SCHEDULE", "LAST_RUN", "NEXT_TICK"),
        [
            (
                entry.name,
                entry.task.name,
                _schedule(entry),
                _moment(entry.last_run) if entry.HasField("last_run") else "never",
                _moment(entry.next_tick),
            )
            for entry in listing.periodic_tasks
        ],
    )
    return RET_OK


def _task_service_command(stub: client_pb2_grpc.TaskServiceStub, args: argparse.Namespace) -> int:
    """``task ID`` (a result read that waits for nothing) and ``info`` (ServerInfo)."""
    if args.command == "info":
        info = stub.ServerInfo(client_pb2.ServerInfoRequest(), timeout=CALL_TIMEOUT)
        _fields(args, _info_fields(info))
        return RET_OK
    request = client_pb2.GetResultRequest(task_id=args.task_id, wait_ms=0)
    result = stub.GetResult(request, timeout=CALL_TIMEOUT).result
    fields = _task_fields(result)
    _fields(args, fields)
    return RET_ERROR if fields["state"] == "UNKNOWN" else RET_OK


def _task_fields(result: tasks_pb2.TaskResult) -> dict[str, object]:
    state = tasks_pb2.TaskState.Name(result.state).removeprefix("TASK_STATE_")
    fields: dict[str, object] = {"task_id": result.task_id, "state": result.custom_state or state}
    if result.state == tasks_pb2.TASK_STATE_UNKNOWN:
        return fields  # (an id the broker never knew is refused as NOT_FOUND instead)
    fields.update(
        name=result.name,
        queue=result.queue,
        attempts=result.attempts,
        retries=result.retries,
        worker_id=result.worker_id,
        date_done=_time(result.date_done) if result.HasField("date_done") else None,
        eta=_time(result.eta) if result.HasField("eta") else None,
        dead_lettered=result.dead_lettered,
        result=_payload(result.result) if result.HasField("result") else None,
        error=None,
    )
    if result.HasField("error"):
        error = result.error
        fields["error"] = {
            "type": error.type,
            "message": error.message,
            "kind": tasks_pb2.TaskErrorKind.Name(error.kind)
            .removeprefix("TASK_ERROR_KIND_")
            .lower(),
            "traceback": error.traceback,
        }
    return fields


def _info_fields(info: client_pb2.ServerInfoResponse) -> dict[str, object]:
    return {
        "version": info.version,
        "protocol": info.protocol,
        "uptime_seconds": round(info.uptime_seconds, 3),
        "features": list(info.features),
        "max_payload_bytes": info.max_payload_bytes,
        "max_message_bytes": info.max_message_bytes,
        "max_batch": info.max_batch,
        "max_wait_ms": info.max_wait_ms,
        "refused": dict(sorted(info.refused.items())),
    }


def _time(stamp: Timestamp) -> str:
    return stamp.ToDatetime(UTC).isoformat()


def _payload(payload: tasks_pb2.Payload) -> object:
    """A JSON payload decoded; anything else described (the CLI never unpickles)."""
    if payload.content_type == "application/json":
        try:
            return json.loads(payload.body)
        except ValueError:
            pass
    return f"<{len(payload.body)} bytes of {payload.content_type or 'unknown type'}>"


def _fields(args: argparse.Namespace, fields: dict[str, object]) -> None:
    """One ``name  value`` line per field, or with ``--json`` one JSON object."""
    if args.json:
        print(json.dumps(fields))
        return
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        if value is None or value == "":
            continue
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{name.ljust(width)}  {shown}")


def _schedule(entry: tasks_pb2.PeriodicTask) -> str:
    """A periodic task's schedule as a listing shows it."""
    if not entry.crontab:
        return f"every {entry.interval_seconds:g}s"
    return f"{entry.crontab} ({entry.timezone or 'UTC'})"


def _moment(stamp: Any) -> str:
    return str(stamp.ToDatetime(UTC).isoformat(timespec="seconds"))


def _dead(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace) -> int:
    if args.action == "list":
        request = admin_pb2.ListDeadLettersRequest(queue=args.queue, limit=args.limit)
        answer = stub.ListDeadLetters(request, timeout=CALL_TIMEOUT)
        if args.json:
            letters = [_dead_letter_json(d) for d in answer.dead_letters]
            print(json.dumps({"dead_letters": letters, "total": answer.total}))
            return RET_OK
        _table(
            ("TASK_ID", "NAME", "QUEUE", "ERROR", "DEAD_AT"),
            [
                (
                    d.task.task_id,
                    d.task.name,
                    d.task.queue,
                    f"{d.task.error.type}: {d.task.error.message}"[:60],
                    d.dead_at.ToDatetime().isoformat(timespec="seconds"),
                )
                for d in answer.dead_letters
            ],
        )
        print(f"{len(answer.dead_letters)} of {answer.total} dead letter(s)")
        return RET_OK
    if not args.task_ids and not args.all:
        return usage_error(f"dead {args.action} needs task ids or --all")
    if args.action == "requeue":
        requeue = admin_pb2.RequeueDeadLettersRequest(
            task_ids=args.task_ids, all=args.all, queue=args.queue
        )
        count = stub.RequeueDeadLetters(requeue, timeout=CALL_TIMEOUT).requeued
        _say(args, f"requeued {count} dead letter(s)", requeued=count)
    else:
        purge = admin_pb2.PurgeDeadLettersRequest(
            task_ids=args.task_ids, all=args.all, queue=args.queue
        )
        count = stub.PurgeDeadLetters(purge, timeout=CALL_TIMEOUT).purged
        _say(args, f"purged {count} dead letter(s)", purged=count)
    return RET_OK


def _events(stub: admin_pb2_grpc.AdminServiceStub, args: argparse.Namespace) -> int:
    request = admin_pb2.EventsRequest(queues=args.queue, task_names=args.task, kinds=args.kind)
    call = stub.Events(request)
    call.initial_metadata()  # the broker sends it once this reader is subscribed
    print("listening for events (Ctrl-C ends)", file=sys.stderr, flush=True)
    for event in call:
        print(_event_json(event) if args.json else _event_line(event), flush=True)
    return RET_OK


def _event_json(event: admin_pb2.Event) -> str:
    fields = {
        "kind": event.kind,
        "at": event.at.ToNanoseconds() / 1e9,
        "task_id": event.task_id,
        "task_name": event.task_name,
        "queue": event.queue,
        "worker_id": event.worker_id,
        "detail": event.detail,
        "dropped": event.dropped,
    }
    if event.kind.startswith("worker_"):
        fields.update(active=event.active, concurrency=event.concurrency)
    if event.runtime:
        fields["runtime"] = event.runtime
    return json.dumps(fields)


def _event_line(event: admin_pb2.Event) -> str:
    """``2026-01-02T03:04:05.678 succeeded tasks.add[id] queue=q worker=w in 0.004s``."""
    at = datetime.fromtimestamp(event.at.ToNanoseconds() / 1e9, UTC)
    parts = [at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], event.kind]
    if event.task_id:
        parts += [f"{event.task_name}[{event.task_id}]", f"queue={event.queue}"]
    if event.worker_id:
        parts.append(f"worker={event.worker_id}")
    if event.kind.startswith("worker_"):
        parts.append(f"load={event.active}/{event.concurrency}")
    if event.runtime:
        parts.append(f"in {event.runtime:.3f}s")
    if event.detail:
        parts.append(f"({event.detail})")
    line = " ".join(parts)
    if event.dropped:
        return f"-- missed {event.dropped} event(s): this reader fell behind --\n{line}"
    return line


def _dead_letter_json(letter: admin_pb2.DeadLetter) -> dict[str, object]:
    task = letter.task
    return {
        "task_id": task.task_id,
        "name": task.name,
        "queue": task.queue,
        "error": {"type": task.error.type, "message": task.error.message},
        "dead_at": _time(letter.dead_at),
    }


def _show(
    args: argparse.Namespace,
    keys: tuple[str, ...],
    header: tuple[str, ...],
    rows: list[tuple[object, ...]],
) -> None:
    """Rows as an aligned table, or with ``--json`` as a JSON array of objects with ``keys``.

    The keys are the contract's field names (admin.proto), so scripts read what the wire says.
    """
    if args.json:
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows]))
        return
    _table(header, [tuple(_cell(cell) for cell in row) for row in rows])


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return value


def _say(args: argparse.Namespace, text: str, **fields: object) -> None:
    """What a command did: a sentence, or with ``--json`` its figures as one JSON object."""
    print(json.dumps(fields) if args.json else text)


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    cells = [header, *[tuple(str(cell) for cell in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
