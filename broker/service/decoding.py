"""Services registered so that undecodable request bytes are answered INVALID_ARGUMENT.

(And so that answers a handler encoded itself, as bytes, are sent as they are.)

gRPC decodes every request with the generated ``X.FromString`` before any handler runs; a decode
error there ends the call with UNKNOWN and logs a traceback, once per message. Here each
deserializer is wrapped so that it cannot raise: bytes that do not decode become a
:class:`Malformed` marker. A unary handler answers the marker with INVALID_ARGUMENT (reason
MALFORMED_MESSAGE) before the servicer method sees it; a stream handler gets it from
``context.read()`` and passes it through :func:`decoded`, which raises the same refusal.

The generated servicer classes stay the API: :func:`add_service` runs the generated
``add_*Servicer_to_server`` against a recorder to get its method table, then registers the
wrapped table on the real server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from broker.errors import MalformedMessage
from broker.service.refusals import Refusals, printable
from broker.service.status import abort_with

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Malformed:
    """What request bytes that do not decode become; ``method`` and ``error`` say where and why."""

    method: str
    error: str

    def refusal(self) -> MalformedMessage:
        """The refusal to answer with."""
        return MalformedMessage(f"request to {self.method} does not decode: {self.error}")


def decoded(message: object, kind: type[M]) -> M:
    """``message`` read from a stream, as ``kind``.

    Raises:
        MalformedMessage: The peer's bytes did not decode.
    """
    if isinstance(message, Malformed):
        raise message.refusal()
    if not isinstance(message, kind):  # pragma: no cover - gRPC decodes with kind's FromString
        raise TypeError(f"expected {kind.__name__}, got {type(message).__name__}")
    return message


class _Recorder:
    """Stands in for the server while a generated ``add_*_to_server`` function runs."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: the same table comes through add_registered_method_handlers."""

    def add_registered_method_handlers(
        self, service: str, table: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Keep ``service``'s method table."""
        self.tables[service] = table


def add_service(
    server: grpc.aio.Server,
    add_to_server: Callable[[Any, Any], None],
    servicer: object,
    refusals: Refusals,
) -> None:
    """Register ``servicer`` as the generated ``add_to_server`` would, with safe decoding."""
    recorder = _Recorder()
    add_to_server(servicer, recorder)
    for service, table in recorder.tables.items():
        safe = {
            name: _safe(handler, f"{service}/{name}", refusals) for name, handler in table.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, safe),))
        server.add_registered_method_handlers(service, safe)  # type: ignore[attr-defined]


def _safe(
    handler: grpc.RpcMethodHandler[Any, Any], method: str, refusals: Refusals
) -> grpc.RpcMethodHandler[Any, Any]:
    decode = handler.request_deserializer
    assert decode is not None  # every generated handler has one

    def safe_decode(data: bytes) -> object:
        try:
            return decode(data)
        except Exception as error:  # protobuf raises DecodeError, and others for odd bytes
            return Malformed(method, printable(str(error) or type(error).__name__))

    encode = handler.response_serializer
    assert encode is not None

    def encode_or_pass(message: object) -> bytes:
        # Pre-encoded answers (broker.service.shared_results) go as they are.
        return message if isinstance(message, bytes) else encode(message)

    behavior = handler.unary_unary
    if behavior is None:  # a stream: its handler checks what it reads (see decoded)
        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=safe_decode, response_serializer=encode_or_pass
        )

    async def unary(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> object:
        if isinstance(request, Malformed):
            refusal = request.refusal()
            refusals.record(refusal, method)
            await abort_with(context, refusal)
        return await behavior(request, context)  # type: ignore[arg-type]

    return handler._replace(  # type: ignore[attr-defined,no-any-return]
        request_deserializer=safe_decode, response_serializer=encode_or_pass, unary_unary=unary
    )
