"""``python -m broker inspect ...`` and ``python -m broker control ...``: Celery's commands.

They call AdminService.ControlWorkers (and TaskService.Revoke for revoke) on a running broker.

Each command first builds plain data (what ``app.control`` returns in Python, keyed by worker
id), then prints it as lines for people; the data is JSON-ready as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from celeriac import control_replies
from celeriac.cli import usage_error
from celeriac.v1 import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc

RET_OK = 0
# Some worker asked did not answer (or a destination is not connected).
RET_NO_REPLY = 1

INSPECT = ("ping", "active", "reserved", "scheduled", "registered", "stats", "active_queues")
CONTROL = ("shutdown", "pool-grow", "pool-shrink", "revoke", "rate-limit")
# The one content type shown decoded (the broker never decodes arguments; this CLI shows JSON).
_JSON = "application/json"
# Added to the gathering timeout for the call's own deadline.
_CALL_MARGIN = 10.0


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``inspect`` and ``control`` with the admin commands' common flags."""
    targets = argparse.ArgumentParser(add_help=False)
    targets.add_argument(
        "--destination",
        "-d",
        action="append",
        default=[],
        help="only this worker id (repeat, or comma-separated; default: every worker)",
    )
    targets.add_argument(
        "--timeout", type=float, default=1.0, help="seconds to wait for replies (default 1)"
    )
    inspect = commands.add_parser(
        "inspect", parents=[common, targets], help="ask workers what they run and hold"
    )
    inspect.add_argument("what", choices=INSPECT)
    control = commands.add_parser(
        "control",
        parents=[common, targets],
        help="shut workers down, resize pools, revoke, override a task's rate limit",
    )
    control.add_argument("action", choices=CONTROL)
    control.add_argument(
        "arguments",
        nargs="*",
        help="pool-grow/pool-shrink: N (default 1); revoke: task ids; rate-limit: TASK RATE "
        "('10/m', '5/s', '0' for none) or TASK --reset",
    )
    control.add_argument(
        "--reset", action="store_true", help="rate-limit: drop the override (workers' rate again)"
    )
    control.add_argument("--terminate", action="store_true", help="revoke: kill running tasks")
    control.add_argument(
        "--signal", default="SIGTERM", help="revoke --terminate: Celery's signal name (checked)"
    )


def run(channel: grpc.Channel, args: argparse.Namespace) -> int:
    """Run ``inspect`` or ``control``; returns the exit code."""
    if args.timeout <= 0:
        return usage_error(f"--timeout {args.timeout} must be positive")
    destination = [w for item in args.destination for w in item.split(",") if w]
    if args.command == "control" and args.action == "revoke":
        return _revoke(channel, args)
    if args.command == "control" and args.action == "rate-limit":
        return _rate_limit(channel, args)
    if args.command == "inspect":
        command = args.what
        count = 0
    else:
        command = args.action.replace("-", "_")
        try:
            count = _count(args.arguments) if command.startswith("pool_") else 0
        except ValueError as error:
            return usage_error(error)
        if command == "shutdown" and args.arguments:
            return usage_error("control shutdown takes no arguments")
    request = control_replies.request(command, destination, args.timeout, count=count)
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    response = stub.ControlWorkers(request, timeout=args.timeout + _CALL_MARGIN)
    if command == "scheduled":
        entries = control_replies.scheduled(response, _decode_json)
        if args.json:
            print(_json({"scheduled": entries, "total": response.scheduled_total}))
        else:
            _print_scheduled(entries, response)
        return RET_OK
    replies = control_replies.replies(response, command, _decode_json)
    if args.json:
        print(_json(replies))
    else:
        _print_replies(command, replies)
    return _report_silent(response)


def _json(data: object) -> str:
    """``--json``: the data as ``app.control`` returns it (keyed by worker id), on one line."""
    return json.dumps(data, default=str)


def _count(arguments: list[str]) -> int:
    if len(arguments) > 1:
        raise ValueError("give one number of slots")
    count = int(arguments[0]) if arguments else 1
    if count < 1:
        raise ValueError(f"the number of slots must be at least 1, got {count}")
    return count


def _revoke(channel: grpc.Channel, args: argparse.Namespace) -> int:
    if not args.arguments:
        return usage_error("control revoke needs task ids")
    try:
        control_replies.signal_number(args.signal)
    except ValueError as error:
        return usage_error(error)
    stub = client_pb2_grpc.TaskServiceStub(channel)
    request = client_pb2.RevokeRequest(task_ids=args.arguments, terminate=args.terminate)
    response = stub.Revoke(request, timeout=_CALL_MARGIN)
    outcomes = {
        task_id: client_pb2.RevokeOutcome.Name(outcome)
        .removeprefix("REVOKE_OUTCOME_")
        .lower()
        .replace("_", "-")
        for task_id, outcome in zip(args.arguments, response.outcomes, strict=True)
    }
    if args.json:
        print(_json(outcomes))
    else:
        for task_id, name in outcomes.items():
            print(f"{task_id}: {name}")
    return RET_OK


def _rate_limit(channel: grpc.Channel, args: argparse.Namespace) -> int:
    """Override a task's global rate limit at the broker (or drop the override)."""
    expected = 1 if args.reset else 2
    if len(args.arguments) != expected:
        return usage_error(
            "control rate-limit needs TASK RATE, or TASK --reset"
            if not args.reset
            else "control rate-limit --reset takes only TASK"
        )
    request = admin_pb2.SetRateLimitRequest(
        task_name=args.arguments[0],
        rate_limit="" if args.reset else args.arguments[1],
        reset=args.reset,
    )
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    response = stub.SetRateLimit(request, timeout=_CALL_MARGIN)
    state = {
        "task": request.task_name,
        "per_second": response.per_second,
        "declared_per_second": response.declared_per_second,
        "overridden": response.overridden,
    }
    if args.json:
        print(_json(state))
    else:
        now = f"{response.per_second:g}/s" if response.per_second else "no limit"
        declared = f"{response.declared_per_second:g}/s" if response.declared_per_second else "none"
        source = "override" if response.overridden else "as the workers declare it"
        print(f"{request.task_name}: {now} ({source}; declared by workers: {declared})")
    return RET_OK


def _decode_json(body: bytes, content_type: str) -> tuple[list[object], dict[str, object]]:
    """Arguments as JSON shows them; other content types are not decoded here (None)."""
    if content_type != _JSON:
        raise ValueError(content_type)
    args, kwargs = json.loads(body)
    return list(args), dict(kwargs)


def _print_replies(command: str, replies: dict[str, Any]) -> None:
    for worker, reply in sorted(replies.items()):
        if isinstance(reply, dict) and "error" in reply:
            print(f"{worker}: error: {reply['error']}")
        elif command in ("active", "reserved"):
            print(f"{worker}: {len(reply)} task(s)")
            for task in reply:
                print(f"  {_task_line(task)}")
        elif command == "registered":
            print(f"{worker}: {len(reply)} task(s)")
            for name in reply:
                print(f"  {name}")
        elif command == "active_queues":
            print(f"{worker}: {', '.join(q['name'] for q in reply)}")
        elif command == "stats":
            print(f"{worker}:")
            for line in _stats_lines(reply):
                print(f"  {line}")
        else:
            print(f"{worker}: {reply['ok']}")


def _task_line(task: dict[str, Any]) -> str:
    """``tasks.add[id] args=[1, 2] kwargs={} pid=123 queue=default``."""
    parts = [f"{task['name']}[{task['id']}]"]
    if task["args"] is not None:
        parts.append(f"args={json.dumps(task['args'])} kwargs={json.dumps(task['kwargs'])}")
    if task["worker_pid"]:
        parts.append(f"pid={task['worker_pid']}")
    parts.append(f"queue={task['delivery_info']['routing_key']}")
    return " ".join(parts)


def _stats_lines(stats: dict[str, Any]) -> list[str]:
    pool = stats["pool"]
    children = ",".join(str(pid) for pid in pool["processes"]) or "-"
    totals = ", ".join(f"{name}={n}" for name, n in sorted(stats["total"].items())) or "-"
    return [
        f"pid={stats['pid']} host={stats['hostname']} uptime={stats['uptime']:.0f}s "
        f"version={stats['sw_ver']}",
        f"pool={pool['implementation']} concurrency={pool['max-concurrency']} children={children}",
        f"active={stats['active']} reserved={stats['prefetch_count']}",
        f"finished: {totals}",
        f"cpu user={stats['rusage']['utime']:.2f}s system={stats['rusage']['stime']:.2f}s "
        f"maxrss={stats['rusage']['maxrss']}KiB",
    ]


def _print_scheduled(
    entries: list[dict[str, Any]], response: admin_pb2.ControlWorkersResponse
) -> None:
    print(f"broker: {response.scheduled_total} scheduled task(s)")
    for entry in entries:
        print(f"  {entry['eta']}  {_task_line(entry['request'])}")


def _report_silent(response: admin_pb2.ControlWorkersResponse) -> int:
    if response.missing:
        print(f"no reply from: {', '.join(response.missing)}", file=sys.stderr)
    if response.unknown:
        print(f"not connected: {', '.join(response.unknown)}", file=sys.stderr)
    if not response.answers and not response.missing and not response.unknown:
        print("no workers connected", file=sys.stderr)
    return RET_NO_REPLY if response.missing or response.unknown else RET_OK
