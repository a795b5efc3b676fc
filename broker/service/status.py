"""The ONE table from broker errors to gRPC status codes, and the decorator that applies it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from broker.errors import (
    BrokerError,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    ProtocolViolation,
    QueueFull,
    ShuttingDown,
    StaleLease,
)

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[BrokerError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StaleLease: grpc.StatusCode.FAILED_PRECONDITION,
    ProtocolViolation: grpc.StatusCode.FAILED_PRECONDITION,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
}

Self = TypeVar("Self")
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
            await context.abort(status_for(error), str(error))
        except Exception:
            logger.exception("unexpected error in %s", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal broker error (logged)")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return wrapper
