"""The one table from gRPC status codes to client errors, for unary calls and session calls."""

from __future__ import annotations

import grpc
import grpc.aio

from client.errors import (
    BrokerUnavailable,
    CeleriacError,
    InvalidTaskSpec,
    PayloadTooLarge,
    QueueFull,
    TaskNotFound,
)

# RESOURCE_EXHAUSTED is refined by its message: a full queue says "full"; anything else (the
# broker's payload limit, gRPC's own message size limit) is a payload too large. Unlisted codes
# map to the root of the tree.
STATUS_ERRORS: dict[grpc.StatusCode, type[CeleriacError]] = {
    grpc.StatusCode.UNAVAILABLE: BrokerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: BrokerUnavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidTaskSpec,
    grpc.StatusCode.OUT_OF_RANGE: InvalidTaskSpec,
    grpc.StatusCode.RESOURCE_EXHAUSTED: QueueFull,
    grpc.StatusCode.NOT_FOUND: TaskNotFound,
}

# A session call's error carries the code's wire number (google.rpc.Code).
_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_from_status(code: grpc.StatusCode, details: str, method: str, target: str) -> Exception:
    """Translate a failed call into the client error tree.

    Args:
        code: The call's status code.
        details: The broker's message.
        method: The RPC name, for the message.
        target: The broker address, for the message.
    """
    kind = STATUS_ERRORS.get(code, CeleriacError)
    if kind is QueueFull and "full" not in details.lower():
        kind = PayloadTooLarge
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"no answer before the deadline{': ' + details if details else ''}"
    return kind(f"{method} to broker at {target} failed ({code.name}): {details}")


def error_from_number(number: int, details: str, method: str, target: str) -> Exception:
    """Like :func:`error_from_status`, for a code sent as its number inside a message."""
    code = _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
    return error_from_status(code, details, method, target)


def rpc_error(error: grpc.RpcError, method: str, target: str) -> Exception:
    """Translate a gRPC exception (sync or asyncio) into the client error tree."""
    code = error.code() if isinstance(error, (grpc.Call, grpc.aio.AioRpcError)) else None
    details = error.details() if isinstance(error, (grpc.Call, grpc.aio.AioRpcError)) else None
    return error_from_status(code or grpc.StatusCode.UNKNOWN, details or str(error), method, target)
