"""Turning a task's remote error back into an exception a caller can catch.

A builtin exception type (``builtins.ZeroDivisionError``, or a bare ``KeyError``) is rebuilt as
that type, so ``except ZeroDivisionError:`` works across the wire like it does in Celery. Any
other type becomes :class:`~client.errors.RemoteTaskError`: importing arbitrary modules named by
a remote peer to rebuild their exceptions would let the peer choose what code runs here. The time
limits that Celeriac itself enforces come back as Celeriac's own classes, so
``except TimeLimitExceeded:`` around ``get()`` works as it does in Celery; the worker names them
``client.errors.X``, the broker (a lease past its limit) by the bare name.
Either way the worker's traceback is attached as a note, so it prints with the local one.
"""

from __future__ import annotations

import builtins

from client.errors import (
    CeleriacError,
    RemoteTaskError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from client.records import RemoteError

# Rebuilding these would exit or interrupt the caller rather than report a failure.
_NEVER_REBUILT = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit"})

_CELERIAC_ERRORS: dict[str, type[CeleriacError]] = {
    kind.__name__: kind for kind in (TimeLimitExceeded, SoftTimeLimitExceeded)
}


def rebuild_exception(error: RemoteError) -> BaseException:
    """Return a local exception for a task's remote error, with the remote traceback attached.

    Args:
        error: The error as the worker reported it.

    Returns:
        An instance of the builtin type when the remote type is a builtin exception that takes
        a message; otherwise a :class:`RemoteTaskError`.
    """
    exception = (
        _builtin_exception(error)
        or _celeriac_exception(error)
        or RemoteTaskError(error.type_name, error.message, error.traceback)
    )
    if error.traceback:
        exception.add_note(f"Remote traceback (from the worker):\n{error.traceback.rstrip()}")
    return exception


def revoked_exception(task_id: str, error: RemoteError | None) -> TaskRevokedError:
    """Return the exception for a revoked task, with the broker's reason when there is one."""
    reason = error.message if error and error.message not in ("", "revoked") else ""
    return TaskRevokedError(f"task {task_id} was revoked{': ' + reason if reason else ''}")


def _celeriac_exception(error: RemoteError) -> BaseException | None:
    module, _, name = error.type_name.rpartition(".")
    kind = _CELERIAC_ERRORS.get(name) if module in {"", "client.errors"} else None
    return kind(error.message) if kind else None


def _builtin_exception(error: RemoteError) -> BaseException | None:
    module, _, name = error.type_name.rpartition(".")
    if module not in {"", "builtins"} or name in _NEVER_REBUILT:
        return None
    kind = getattr(builtins, name, None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)):
        return None
    message = error.message
    if kind is KeyError and len(message) >= 2 and message[0] == message[-1] == "'":
        message = message[1:-1]  # str(KeyError("k")) is "'k'"; rebuilding must not quote twice
    try:
        return kind(message)
    except Exception:  # a builtin whose constructor needs more (e.g. UnicodeDecodeError)
        return None
