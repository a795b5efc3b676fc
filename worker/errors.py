"""The worker's error tree, and the one table that maps gRPC status codes onto it.

Errors a task raises are not here: they travel to the broker as data (`jobs.TaskErrorInfo`).
These are the worker's own failures: a task module that will not load, a broker that cannot be
reached or refuses the session, and the error recorded for a task whose child process died.
"""

from __future__ import annotations

import grpc
import grpc.aio

from celeriac.settings import InvalidSetting


class WorkerError(Exception):
    """Root of every error the worker raises itself."""


class TaskModuleError(WorkerError):
    """A `--tasks` module could not be imported, or declares no tasks."""


class ConfigurationError(WorkerError, InvalidSetting):
    """A setting (flag or CELERIAC_* variable) has an invalid value."""


class BrokerUnavailable(WorkerError):
    """The session stream could not be opened or broke; the worker reconnects with backoff."""


class SessionRefused(WorkerError):
    """The broker refused the session for a reason retrying cannot fix (e.g. a bad Hello)."""


class NotStarted(WorkerError):
    """A pool gives a job back without having started it.

    Its child is stuck behind a long task, or died first. The worker buffers the job again,
    where the prefetch hold limit applies: it starts on the next free slot or goes back to the
    broker.
    """


class WorkerLostError(WorkerError):
    """The child process running a task died (killed by a signal, crashed, or called os._exit).

    Recorded as the task's error. Like a whole worker dying, this counts as a retry of the
    task while its retries last (see `execution.lost_outcome`).
    """


# Status codes of a broken session stream that retrying will not fix; every other code
# (UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, INTERNAL, ...) is treated as a transient loss of
# the broker and answered by reconnecting.
_REFUSING_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


def from_rpc_error(error: grpc.RpcError) -> WorkerError:
    """Translate a gRPC error from the session stream into the worker's error tree.

    Args:
        error: The error raised by a gRPC call.

    Returns:
        `SessionRefused` for codes that retrying cannot fix, `BrokerUnavailable` otherwise.
    """
    # An asyncio call's error is no grpc.Call; its str() is a multi-line dump, never logged.
    call = isinstance(error, (grpc.Call, grpc.aio.AioRpcError))
    code = error.code() if call else None
    details = error.details() if call else str(error)
    name = code.name if code is not None else "UNKNOWN"
    if code in _REFUSING_CODES:
        return SessionRefused(f"broker refused the session: {name}: {details}")
    return BrokerUnavailable(f"broker connection lost: {name}: {details}")
