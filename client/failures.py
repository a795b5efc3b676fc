"""Turning a task's remote error back into an exception a caller can catch.

A builtin exception type (``builtins.ZeroDivisionError``, or a bare ``KeyError``) is rebuilt as
that type, so ``except ZeroDivisionError:`` works across the wire like it does in Celery. So is
a type of the caller's own code, ``myapp.errors.PaymentDeclined``, when its module is already
imported in the calling process (a producer that imports its tasks module usually has their
exceptions too), and the class is an ``Exception`` that takes a message. A module that is not
imported yet stays unimported: importing modules named by a remote peer would let the peer
choose what code runs here. Celery imports them; that is the one difference. Anything else
becomes :class:`~client.errors.RemoteTaskError`. The time limits that Celeriac itself enforces
come back as Celeriac's own classes, so ``except TimeLimitExceeded:`` around ``get()`` works as
it does in Celery; the worker names them ``client.errors.X``, the broker (a lease past its limit)
by the bare name. An expired task is REVOKED and comes back as
:class:`~client.errors.TaskExpired`, a :class:`~client.errors.TaskRevokedError`.
Either way the worker's traceback is attached as a note, so it prints with the local one.
"""

from __future__ import annotations

import builtins
import sys

from client.errors import (
    CeleriacError,
    ChordError,
    RemoteTaskError,
    SoftTimeLimitExceeded,
    TaskExpired,
    TaskRevokedError,
    TimeLimitExceeded,
)
from client.records import RemoteError

# Rebuilding these would exit or interrupt the caller rather than report a failure.
_NEVER_REBUILT = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit"})

_CELERIAC_ERRORS: dict[str, type[CeleriacError]] = {
    kind.__name__: kind for kind in (TimeLimitExceeded, SoftTimeLimitExceeded, ChordError)
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
        or _imported_exception(error)
        or RemoteTaskError(error.type_name, error.message, error.traceback, error.kind)
    )
    if error.traceback:
        exception.add_note(f"Remote traceback (from the worker):\n{error.traceback.rstrip()}")
    return exception


def revoked_exception(task_id: str, error: RemoteError | None) -> TaskRevokedError:
    """Return the exception for a revoked task, with the broker's reason when there is one."""
    reason = error.message if error and error.message not in ("", "revoked") else ""
    kind = TaskExpired if error and error.type_name.endswith("TaskExpired") else TaskRevokedError
    return kind(f"task {task_id} was revoked{': ' + reason if reason else ''}")


def _celeriac_exception(error: RemoteError) -> BaseException | None:
    module, _, name = error.type_name.rpartition(".")
    kind = _CELERIAC_ERRORS.get(name) if module in {"", "client.errors"} else None
    return kind(error.message) if kind else None


def _imported_exception(error: RemoteError) -> BaseException | None:
    """The remote type rebuilt from a module this process has imported already, if any."""
    # The module is the longest dotted prefix already imported ("pkg.mod" of "pkg.mod.Cls.Inner").
    parts = error.type_name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            break
    else:
        return None
    kind: object = module
    for name in parts[cut:]:
        kind = getattr(kind, name, None)
    if (
        not (isinstance(kind, type) and issubclass(kind, Exception))
        or kind.__name__ in _NEVER_REBUILT
    ):
        return None
    try:
        return kind(error.message)
    except Exception:  # a constructor that needs more than a message
        return None


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
