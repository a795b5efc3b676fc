"""Task records as journal rows, and back.

A row holds the *current* state of one task, never its history. Its parts are encoded with
formats that stay readable across Python versions and languages: the spec (without its
arguments) and the small changing state as JSON arrays, payloads as plain content type plus
bytes columns. Never pickle or marshal.

The spec array, by position (FORMAT_VERSION 2): name, queue, headers (object), priority, eta,
expires, time limit ms, soft time limit ms, idempotency key, idempotency window ms, ignore
result, result TTL ms, max retries (or null), then, only for a concurrency-limited task or a
task in a workflow, its concurrency key and limit ("" and 0 when unlimited), then, only for a
task in a workflow, the ids it depends on (array) and its dependency mode (string,
DependencyMode's value): 13, 15 or 17 items (a version 1 spec has 14). It holds nothing of the
task's identity (the row has the task id), so tasks submitted with the same options have the
same spec text and a recovery decodes it once for all of them. Version 1 arrays have the task
id as submitted second; they are still read.

The state array, by position: phase, state, retries, attempts, redeliveries, worker id, lease
id, due (wall s or null), date done (wall s or null), queue sequence number, dead-lettered
flag, error ([type, message, traceback, retryable, kind] or null; rows written before the kind
was kept have four items, and their kind is derived from the type again); then, only for a
task that replaced itself (Task.replace) or a running task in a custom state, its
replacement's id ("" for none); then, only for the latter, the custom state's name (its meta is
the row's result while the task runs).

Each row also carries the journal's key for its task (``TaskRow.row``): increasing integers in
the order tasks are first written, so a store can append new rows at the end of its index
instead of at random places (task ids are random). A store keyed by task id may ignore it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from broker.core.model import (
    NO_HEADERS,
    DependencyMode,
    ErrorKind,
    Payload,
    Phase,
    TaskError,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from broker.core.periodic import PeriodicEntry, PeriodicSpec

FORMAT_VERSION = 2

_PHASES = {phase.value: phase for phase in Phase}
_STATES = {state.value: state for state in TaskState}
_MODES = {mode.value: mode for mode in DependencyMode}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_text = json.encoder.encode_basestring_ascii  # a str as a JSON string literal, in C
# raw_decode skips decode()'s two whitespace scans (a quarter of a row's decoding); rows never
# start with whitespace, and trailing bytes are refused below.
_parse = json.JSONDecoder().raw_decode


@dataclass(slots=True)
class TaskRow:
    """One task as the store sees it.

    Attributes:
        task_id: The task's id.
        state: The encoded state array (see the module docstring).
        spec: The encoded spec on the task's first write; None when the row exists already and
            only its state (and result) change.
        args: The arguments, written with the spec.
        key_until: Wall time the task's idempotency key stops deduplicating, with the spec.
        result: The stored result of a finished task.
        drop_args: Clear the stored arguments (a finished task never runs again).
        row: The journal's key for this task's row (see the module docstring).
        front: The task was put back at the front of its queue (a redelivery): a shared
            pool gives it a place ahead of the tasks waiting there.
        held: A queued task this broker keeps (held back at a rate or concurrency gate): a
            shared pool leaves it out, owned by this broker, so no other broker claims it.
    """

    task_id: str
    state: str
    spec: str | None = None
    args: Payload | None = None
    key_until: float | None = None
    result: Payload | None = None
    drop_args: bool = False
    row: int = 0
    front: bool = False
    held: bool = False


@dataclass(slots=True)
class Batch:
    """The changes of one or more event-loop turns, written as one transaction.

    ``deletes`` names the dropped tasks by id, ``deleted_rows`` by their rows' keys (a store
    uses whichever it keys its rows by).
    """

    rows: list[TaskRow] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    deleted_rows: list[int] = field(default_factory=list)
    # Broker state other than tasks, by key (see STATE_PERIODIC): the encoded value, or None
    # to delete the key. Written in the same transaction as the task rows.
    state: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows) + len(self.deletes) + len(self.state)


def new_row_columns(row: TaskRow, result_type: str | None, result: bytes | None) -> tuple[Any, ...]:
    """A new row's columns in the stores' order.

    Task id, spec, key until, args type, args, result type, result, state; ``result_type`` and
    ``result`` are the row's result, split by the caller (which needs them for updates too).
    """
    args = row.args
    return (
        row.task_id,
        row.spec,
        row.key_until,
        None if args is None else args.content_type,
        None if args is None else args.body,
        result_type,
        result,
        row.state,
    )


@dataclass(slots=True)
class StoredTask:
    """A row as loaded back from a store (``row`` 0: the store keeps no row keys).

    Not declared frozen: a recovery builds one per task, and a frozen dataclass sets each
    field through ``object.__setattr__``.
    """

    task_id: str
    spec: str
    key_until: float | None
    args: Payload | None
    result: Payload | None
    state: str
    row: int = 0


def encode(record: TaskRecord, key_until: Callable[[TaskSpec], float]) -> TaskRow:
    """The row for ``record``'s current state (with its spec when the store lacks the row).

    A record without a row yet (``journal_row`` 0) gets its spec written; the caller assigns
    the new row's key. This runs on the event loop for every change, so the arrays are
    formatted directly (valid JSON: strings through the json module's own C escaper) rather
    than through json.dumps, which took about twice as long per task.
    """
    error = record.error
    state = (
        f'["{record.phase.value}","{record.state.value}",{record.retries},{record.attempts},'
        f"{record.redeliveries},{_text(record.worker_id)},{_text(record.lease_id)},"
        f"{_number(record.due)},{_number(record.date_done)},{record.seq},"
        f"{'true' if record.dead_lettered else 'false'},"
        f"{'null' if error is None else _error(error)}{_state_tail(record)}]"
    )
    # A running task's result is the meta of its custom state.
    kept = record.phase is Phase.FINISHED or record.custom_state
    row = TaskRow(record.task_id, state, result=record.result if kept else None)
    row.drop_args = record.args is None
    row.row = record.journal_row
    if record.seq < 0:  # front pushes take negative places (Lifecycle.enqueue)
        row.front = True
    if not row.row:
        spec = record.spec
        row.spec = _spec_text(spec)
        row.args = record.args
        if spec.idempotency_key:
            row.key_until = key_until(spec)
    return row


def _state_tail(record: TaskRecord) -> str:
    """The state array's optional last items (see the module docstring)."""
    if record.custom_state:
        return f",{_text(record.replaced_by)},{_text(record.custom_state)}"
    return f",{_text(record.replaced_by)}" if record.replaced_by else ""


def _spec_text(spec: TaskSpec) -> str:
    return (
        f"[{_text(spec.name)},{_text(spec.queue)},"
        f"{_dumps(dict(spec.headers)) if spec.headers else '{}'},{spec.priority},"
        f"{_number(spec.eta)},{_number(spec.expires)},{spec.time_limit_ms},"
        f"{spec.soft_time_limit_ms},{_text(spec.idempotency_key)},"
        f"{spec.idempotency_window_ms},{'true' if spec.ignore_result else 'false'},"
        f"{spec.result_ttl_ms},{'null' if spec.max_retries is None else spec.max_retries}"
        f"{_concurrency(spec)}{_dependencies(spec)}]"
    )


def _dependencies(spec: TaskSpec) -> str:
    if not spec.depends_on:
        return ""
    return f",{_dumps(list(spec.depends_on))},{_text(spec.dependency_mode.value)}"


def _concurrency(spec: TaskSpec) -> str:
    # Written only when set, so rows of unlimited tasks keep their 13 items.
    if not spec.concurrency_limit and not spec.depends_on:
        return ""
    return f",{_text(spec.concurrency_key)},{spec.concurrency_limit}"


def _number(value: float | None) -> str:
    # repr() of a finite float is valid JSON; times are always finite.
    return "null" if value is None else repr(float(value))


def _error(error: TaskError) -> str:
    return _dumps([error.type, error.message, error.traceback, error.retryable, error.kind.value])


def _decode_error(values: list[Any]) -> TaskError:
    type_name, message, traceback, retryable, *kind = values
    found = ErrorKind(kind[0]) if kind else ErrorKind.UNSPECIFIED  # UNSPECIFIED: derived
    return TaskError(type_name, message, traceback, bool(retryable), found)


def decode(stored: StoredTask) -> TaskRecord:
    """Rebuild a record from its row (see :class:`Decoder`, which recovery uses).

    Raises:
        ValueError: The row does not decode (a corrupt or foreign file).
    """
    return Decoder().decode(stored)


class Decoder:
    """Rebuilds records from rows, decoding each distinct spec text once.

    Tasks submitted with the same options share one spec text (version 2 rows), and their
    restored records share one :class:`TaskSpec`: specs are never changed once built, and a
    restored spec's ``task_id`` (the id as submitted, which only a submit reads) is empty.
    """

    # Distinct spec texts remembered at once: options that differ per task (an eta, a key)
    # would otherwise grow the cache by one entry per task.
    MAX_SPECS = 4096

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def decode(self, stored: StoredTask) -> TaskRecord:
        """Rebuild one record.

        Raises:
            ValueError: The row does not decode (a corrupt or foreign file).
        """
        try:
            spec = self._specs.get(stored.spec)
            if spec is None:
                spec = self._spec(stored.spec)
            state_values, end = _parse(stored.state)
            if end != len(stored.state):
                raise ValueError("trailing data")
            (phase, state, retries, attempts, redeliveries, worker_id, lease_id, due, done,
             seq, dead, error, *tail) = state_values  # fmt: skip
            record = TaskRecord(stored.task_id, spec)
            record.args = stored.args
            record.phase = _PHASES[phase]
            record.state = _STATES[state]
            record.retries = int(retries)
            record.attempts = int(attempts)
            record.redeliveries = int(redeliveries)
            record.worker_id = str(worker_id)
            record.lease_id = str(lease_id)
            record.due = None if due is None else float(due)
            record.date_done = None if done is None else float(done)
            record.seq = int(seq)
            record.dead_lettered = bool(dead)
            record.error = None if error is None else _decode_error(error)
            if tail:
                record.replaced_by = str(tail[0])
                record.custom_state = str(tail[1]) if len(tail) > 1 else ""
            record.result = stored.result
            record.journal_row = stored.row
        except Exception as problem:
            raise ValueError(f"task {stored.task_id!r}: undecodable row ({problem})") from None
        return record

    def _spec(self, text: str) -> TaskSpec:
        values, end = _parse(text)
        if end != len(text):
            raise ValueError("trailing data")
        if len(values) == _V1_SPEC_ITEMS:  # version 1: the task id as submitted is second
            del values[1]
            return _decode_spec(values)  # the text holds the id: no other row shares it
        spec = _decode_spec(values)
        if len(self._specs) >= self.MAX_SPECS:
            self._specs.clear()
        self._specs[text] = spec
        return spec


_V1_SPEC_ITEMS = 14


def _decode_spec(values: list[Any]) -> TaskSpec:
    (name, queue, headers, priority, eta, expires, time_limit_ms, soft_time_limit_ms,
     key, window_ms, ignore_result, result_ttl_ms, max_retries, *extra) = values  # fmt: skip
    concurrency_key, concurrency_limit = extra[:2] if extra else ("", 0)
    workflow = extra[2:]
    return TaskSpec(
        name=intern(str(name)),
        queue=intern(str(queue)),
        headers={str(k): str(v) for k, v in headers.items()} if headers else NO_HEADERS,
        priority=int(priority),
        eta=None if eta is None else float(eta),
        expires=None if expires is None else float(expires),
        time_limit_ms=int(time_limit_ms),
        soft_time_limit_ms=int(soft_time_limit_ms),
        idempotency_key=str(key),
        idempotency_window_ms=int(window_ms),
        ignore_result=bool(ignore_result),
        result_ttl_ms=int(result_ttl_ms),
        max_retries=None if max_retries is None else int(max_retries),
        concurrency_key=str(concurrency_key),
        concurrency_limit=int(concurrency_limit),
        depends_on=tuple(str(i) for i in workflow[0]) if workflow else (),
        dependency_mode=_MODES[workflow[1]] if workflow else DependencyMode.RESULT,
    )


# -- broker state other than tasks ----------------------------------------------------------

# Key prefix of a periodic entry's state row (broker.core.periodic); the rest is its name.
STATE_PERIODIC = "periodic/"


def encode_periodic(entry: PeriodicEntry) -> str:
    """A periodic entry and its progress, as one JSON object (arguments in base64)."""
    spec = entry.spec
    args = spec.template.args
    return _dumps(
        {
            "name": spec.name,
            "interval": spec.interval,
            "crontab": spec.crontab,
            "expires_ms": spec.expires_ms,
            "timezone": spec.timezone,
            "anchor": entry.anchor,
            "done_until": entry.done_until,
            "last_run": entry.last_run,
            "task": json.loads(_spec_text(spec.template)),
            "args": None
            if args is None
            else [args.content_type, base64.b64encode(args.body).decode("ascii")],
        }
    )


def decode_periodic(text: str) -> PeriodicEntry:
    """Rebuild a periodic entry from its state row.

    Raises:
        ValueError: The row does not decode (a corrupt or foreign file).
    """
    try:
        values = json.loads(text)
        args = values["args"]
        template = _decode_spec(values["task"])
        template.args = None if args is None else Payload(args[0], base64.b64decode(args[1]))
        spec = PeriodicSpec(
            name=str(values["name"]),
            template=template,
            interval=float(values["interval"]),
            crontab=str(values["crontab"]),
            expires_ms=int(values["expires_ms"]),
            timezone=str(values.get("timezone", "")),  # rows written before time zones: UTC
        )
        last_run = values["last_run"]
        return PeriodicEntry(
            spec,
            float(values["anchor"]),
            float(values["done_until"]),
            None if last_run is None else float(last_run),
        )
    except Exception as problem:
        raise ValueError(f"periodic entry: undecodable row ({problem})") from None


# Key prefix of an operator's rate-limit override (app.control.rate_limit); the rest is the
# task's name. The value is the override in tasks per second (0: no limit).
STATE_RATE = "rate-limit/"


def encode_rate(per_second: float) -> str:
    """A rate-limit override's row."""
    return _dumps({"per_second": per_second})


def decode_rate(text: str) -> float:
    """Read a rate-limit override's row.

    Raises:
        ValueError: The row does not decode (a corrupt or foreign file).
    """
    try:
        per_second = float(json.loads(text)["per_second"])
    except Exception as problem:
        raise ValueError(f"rate-limit override: undecodable row ({problem})") from None
    if not per_second >= 0:
        raise ValueError(f"rate-limit override: undecodable row (rate {per_second})")
    return per_second
