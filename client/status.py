"""The ONE table from the broker's refusals to client errors, for unary and session calls.

The broker names every refusal with a stable reason (google.rpc.ErrorInfo, sent in the
``grpc-status-details-bin`` trailer of a unary call, or in CallError on a session stream); the
reason picks the exception, never the message text. An error without a reason (gRPC's own, such
as a message over its size limit, or a broker without error details) is mapped by its status
code. Either way the exception keeps the reason and the metadata the broker sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import cast

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from client.errors import (
    AuthenticationError,
    BrokerGone,
    BrokerUnavailable,
    CeleriacError,
    ContentTypeRefused,
    InvalidTaskSpec,
    LimitExceeded,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    TaskNotFound,
)

# The broker's ErrorInfo domain; a detail from another domain is not ours to interpret.
DOMAIN = "celeriac.dev"

REASON_ERRORS: dict[str, type[CeleriacError]] = {
    "INVALID_ARGUMENT": InvalidTaskSpec,
    "INVALID_NAME": InvalidTaskSpec,
    "MALFORMED_MESSAGE": InvalidTaskSpec,
    "NOT_FOUND": TaskNotFound,
    "QUEUE_FULL": QueueFull,
    "PAYLOAD_TOO_LARGE": PayloadTooLarge,
    "MESSAGE_TOO_LARGE": PayloadTooLarge,
    "HELD_BYTES_EXCEEDED": LimitExceeded,
    "HELD_CALLS_EXCEEDED": LimitExceeded,
    "QUEUES_EXCEEDED": LimitExceeded,
    "SESSIONS_EXCEEDED": LimitExceeded,
    "SHUTTING_DOWN": BrokerGone,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": PermissionDenied,
    "CONTENT_TYPE_NOT_ACCEPTED": ContentTypeRefused,
}

# For errors without a reason. RESOURCE_EXHAUSTED without one comes from gRPC itself: a message
# over its size limit. Unlisted codes map to the root of the tree.
STATUS_ERRORS: dict[grpc.StatusCode, type[CeleriacError]] = {
    grpc.StatusCode.UNAVAILABLE: BrokerGone,
    # The broker's gRPC server cancels a call that arrives while it shuts down.
    grpc.StatusCode.CANCELLED: BrokerGone,
    grpc.StatusCode.DEADLINE_EXCEEDED: BrokerUnavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidTaskSpec,
    grpc.StatusCode.OUT_OF_RANGE: InvalidTaskSpec,
    grpc.StatusCode.RESOURCE_EXHAUSTED: PayloadTooLarge,
    grpc.StatusCode.NOT_FOUND: TaskNotFound,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}

# A session call's error carries the code's wire number (google.rpc.Code).
_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

_DETAILS_KEY = "grpc-status-details-bin"
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def error_from_status(
    code: grpc.StatusCode,
    details: str,
    method: str,
    target: str,
    *,
    reason: str = "",
    metadata: Mapping[str, str] = _NO_METADATA,
) -> Exception:
    """Translate a failed call into the client error tree.

    Args:
        code: The call's status code.
        details: The broker's message.
        method: The RPC name, for the message.
        target: The broker address, for the message.
        reason: The broker's ErrorInfo reason, or "" when the error carried none.
        metadata: The ErrorInfo's metadata.
    """
    kind = REASON_ERRORS.get(reason) or STATUS_ERRORS.get(code, CeleriacError)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        details = f"no answer before the deadline{': ' + details if details else ''}"
    error = kind(f"{method} to broker at {target} failed ({code.name}): {details}")
    if reason:
        error.reason = reason
        error.metadata = MappingProxyType(dict(metadata))
    return error


def error_from_number(
    number: int,
    details: str,
    method: str,
    target: str,
    *,
    reason: str = "",
    metadata: Mapping[str, str] = _NO_METADATA,
) -> Exception:
    """Like :func:`error_from_status`, for a code sent as its number inside a message."""
    code = _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
    return error_from_status(code, details, method, target, reason=reason, metadata=metadata)


def rpc_error(error: grpc.RpcError, method: str, target: str) -> Exception:
    """Translate a gRPC exception (sync or asyncio) into the client error tree."""
    if not isinstance(error, (grpc.Call, grpc.aio.AioRpcError)):
        return error_from_status(grpc.StatusCode.UNKNOWN, str(error), method, target)
    info = error_info(error.trailing_metadata() or ())
    reason, metadata = (info.reason, info.metadata) if info is not None else ("", _NO_METADATA)
    code = error.code() or grpc.StatusCode.UNKNOWN
    details = error.details() or ""
    return error_from_status(code, details, method, target, reason=reason, metadata=metadata)


def error_info(trailers: Iterable[object]) -> error_details_pb2.ErrorInfo | None:
    """The broker's ErrorInfo in a call's trailing metadata, or None when there is none.

    ``trailers`` holds (key, value) pairs: sync and asyncio calls type them differently.
    """
    for key, value in cast("Iterable[tuple[str, object]]", trailers):
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:  # a corrupt trailer must not hide the call's own error
            return None
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == DOMAIN:
                return info
    return None
