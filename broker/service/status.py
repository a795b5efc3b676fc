"""The ONE table from broker errors to gRPC status codes, and the decorator that applies it.

Every refusal also carries a google.rpc.ErrorInfo as a google.rpc.Status detail (the
``grpc-status-details-bin`` trailer, gRPC's rich error model): ``reason`` is the error's stable
UPPER_SNAKE name (:attr:`broker.errors.BrokerError.reason`), ``domain`` is :data:`DOMAIN` and
``metadata`` holds the facts of the refusal (the limit, the current value). Programs match the
reason, never the message text; calls on a Session stream carry the same reason in CallError.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, Protocol, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status
from grpc_status import rpc_status

from broker.errors import (
    BrokerError,
    InvalidArgument,
    JournalUnavailable,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    ProtocolViolation,
    SessionFenced,
    ShuttingDown,
    StaleLease,
    Unauthenticated,
)
from broker.service.refusals import Refusals

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[BrokerError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    # Every limit (queue full, payload too large, held bytes, held calls, queues, sessions).
    LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StaleLease: grpc.StatusCode.FAILED_PRECONDITION,
    ProtocolViolation: grpc.StatusCode.FAILED_PRECONDITION,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    JournalUnavailable: grpc.StatusCode.UNAVAILABLE,
    SessionFenced: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

# ErrorInfo.domain: who defines the reasons (one name for every Celeriac broker).
DOMAIN = "celeriac.dev"


class Refusing(Protocol):
    """A servicer that counts what it refuses."""

    @property
    def refusals(self) -> Refusals:
        """Where refusals are counted and logged."""
        ...


Self = TypeVar("Self", bound=Refusing)
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[
    [Self, Request, grpc.aio.ServicerContext[Request, Response]], Awaitable[Response]
]


def status_for(error: BrokerError) -> grpc.StatusCode:
    """The status code for ``error`` (the nearest mapped base class wins)."""
    for cls in type(error).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def status_number(code: grpc.StatusCode) -> int:
    """The wire number of ``code`` (google.rpc.Code), for errors carried inside messages."""
    number: int = code.value[0]
    return number


def error_info(error: BrokerError) -> ErrorInfo:
    """The ErrorInfo that tells a program which refusal ``error`` is."""
    return ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)


def rich_status(error: BrokerError) -> grpc.Status:
    """``error`` as a gRPC status whose trailers carry its ErrorInfo (via grpcio-status)."""
    detail = any_pb2.Any()
    detail.Pack(error_info(error))
    message = Status(code=status_number(status_for(error)), message=str(error), details=[detail])
    status: grpc.Status = rpc_status.to_status(message)
    return status


async def abort_with(
    context: grpc.aio.ServicerContext[Request, Response], error: BrokerError
) -> NoReturn:
    """End the call with ``error``'s code, message and ErrorInfo."""
    status = rich_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def translate_errors(
    method: Handler[Self, Request, Response],
) -> Handler[Self, Request, Response]:
    """Wrap a unary handler: BrokerErrors abort with their code, anything else with INTERNAL."""

    @functools.wraps(method)
    async def wrapper(
        self: Self, request: Request, context: grpc.aio.ServicerContext[Request, Response]
    ) -> Response:
        try:
            return await method(self, request, context)
        except BrokerError as error:
            self.refusals.record(error, method.__qualname__)
            await abort_with(context, error)
        except Exception:
            logger.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal broker error (logged)")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return wrapper
