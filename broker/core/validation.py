"""Checks on submitted specs, with messages precise enough to fix the call from."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from broker.core.model import TaskSpec
from broker.errors import ContentTypeNotAccepted, InvalidArgument, InvalidName, PayloadTooLarge

MAX_NAME_LENGTH = 255
MAX_TASK_ID_LENGTH = 255
MAX_KEY_LENGTH = 255
MAX_PRIORITY = 9
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


@dataclass(frozen=True, slots=True)
class Limits:
    """The configured limits a spec is checked against.

    ``accept_content`` is the operator's list of argument content types (``--accept-content``).
    A spec's content type is compared with it as a plain string: the broker never decodes
    arguments, it only refuses what it was not told to pass on (pickle, by default).
    """

    max_payload_bytes: int
    accept_content: frozenset[str] = frozenset({"application/json"})


def validate_spec(spec: TaskSpec, limits: Limits) -> None:
    """Raise if ``spec`` cannot be accepted.

    Raises:
        InvalidArgument: A field is missing, malformed or out of range.
        PayloadTooLarge: The arguments or headers exceed ``limits.max_payload_bytes``.
    """
    _check_identity(spec)
    if spec.priority < 0 or spec.priority > MAX_PRIORITY:
        raise InvalidArgument(
            f"priority must be 0..{MAX_PRIORITY} (9 runs first), got {spec.priority}"
        )
    if spec.time_limit_ms < 0 or spec.soft_time_limit_ms < 0:
        raise InvalidArgument("time limits must not be negative")
    if spec.time_limit_ms and spec.soft_time_limit_ms > spec.time_limit_ms:
        raise InvalidArgument(
            f"soft_time_limit_ms ({spec.soft_time_limit_ms}) must not exceed "
            f"time_limit_ms ({spec.time_limit_ms})"
        )
    if spec.max_retries is not None and spec.max_retries < 0:
        raise InvalidArgument("max_retries must not be negative")
    if spec.concurrency_key:
        _check_concurrency(spec)
    _check_payload(spec, limits)


def _check_concurrency(spec: TaskSpec) -> None:
    if not spec.concurrency_limit:
        raise InvalidArgument(
            "concurrency_key needs concurrency_limit (how many leases the key may hold at once)"
        )
    if len(spec.concurrency_key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"concurrency_key is longer than {MAX_KEY_LENGTH} characters")


def check_name(name: str, what: str) -> None:
    """Raise unless ``name`` is 1-255 printable characters.

    Names end up in logs and terminals (the broker's, the worker's, an operator's), so they may
    hold no control characters (NUL, newline, ESC), no format characters such as the bidi
    overrides that reverse how a line reads, and no other non-printable ones.

    Raises:
        InvalidName: ``name`` is empty, too long or not printable.
    """
    if not name:
        raise InvalidName(f"{what} is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(
            f"{what} is longer than {MAX_NAME_LENGTH} characters",
            limit="max_name_length",
            max=MAX_NAME_LENGTH,
            value=len(name),
        )
    if not name.isprintable():
        raise InvalidName(
            f"{what} {name[:100]!r} holds control, format (bidi) or other non-printable characters"
        )


def _check_identity(spec: TaskSpec) -> None:
    check_name(spec.name, "task name")
    if len(spec.task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidArgument(f"task_id is longer than {MAX_TASK_ID_LENGTH} characters")
    if not spec.task_id.isprintable():
        raise InvalidArgument("task_id must be printable text")
    if not _valid_queue_name(spec.queue):
        raise InvalidName(
            f"queue name {spec.queue[:140]!r} must be 1-128 characters of A-Z a-z 0-9 _ . : -"
        )
    if len(spec.idempotency_key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"idempotency_key is longer than {MAX_KEY_LENGTH} characters")


@functools.lru_cache(maxsize=1024)
def _valid_queue_name(name: str) -> bool:
    # A deployment uses a handful of queues; the cache spares a regex match per task.
    return QUEUE_NAME.fullmatch(name) is not None


def _check_payload(spec: TaskSpec, limits: Limits) -> None:
    args = spec.args
    if args is not None and (args.content_type or args.body):
        if args.content_type not in limits.accept_content:
            accepted = ", ".join(sorted(limits.accept_content))
            raise ContentTypeNotAccepted(
                f"content type {args.content_type[:100]!r} is not accepted by this broker "
                f"(--accept-content: {accepted})"
            )
        if len(args.body) > limits.max_payload_bytes:
            raise PayloadTooLarge(
                f"arguments are {len(args.body)} bytes; the broker accepts at most "
                f"{limits.max_payload_bytes} (max_payload_bytes; pass a reference to large data "
                "instead)",
                limit="max_payload_bytes",
                max=limits.max_payload_bytes,
                value=len(args.body),
            )
    if not spec.headers:
        return
    header_bytes = sum(len(k) + len(v) for k, v in spec.headers.items())
    if header_bytes > limits.max_payload_bytes:
        raise PayloadTooLarge(
            f"headers are {header_bytes} bytes; "
            f"the broker accepts at most {limits.max_payload_bytes} (max_payload_bytes)",
            limit="max_payload_bytes",
            max=limits.max_payload_bytes,
            value=header_bytes,
        )


def payload_bytes(spec: TaskSpec) -> int:
    """The bytes of ``spec``'s arguments, as counted against the broker's held bytes."""
    return len(spec.args.body) if spec.args is not None else 0
