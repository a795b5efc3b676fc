"""How clients, workers and the admin CLI reach the broker: TLS and the bearer token, in one place.

An address ``grpcs://host:port`` says TLS is on (:attr:`celeriac.address.Address.tls`);
``grpc://host:port`` and ``host:port`` are plain text. A CA bundle, or a client certificate for
mutual TLS, turns TLS on as well. Without a CA the system's trust store is used. A token goes
into every call's metadata as ``authorization: Bearer <token>`` (the gRPC convention); it never
appears in a ``repr`` or a log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import grpc
import grpc.aio

from celeriac.address import Address

Options = Sequence[tuple[str, Any]]


def read_pem(path: str) -> bytes:
    """A PEM file's bytes.

    Raises:
        ValueError: The file cannot be read or holds no PEM block.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{path} is not a PEM file")
    return data


@dataclass(frozen=True)
class ChannelSecurity:
    """TLS material and the bearer token for one broker connection.

    Attributes:
        tls: Whether to speak TLS (the address was ``grpcs://``, or a CA or certificate is set).
        ca_file: PEM bundle of the CAs trusted to sign the broker's certificate; the system's
            trust store when empty.
        cert_file: PEM client certificate chain, for a broker that requires mutual TLS.
        key_file: PEM private key of ``cert_file``.
        token: Bearer token sent with every call; empty sends none.
    """

    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    token: str = dataclasses.field(default="", repr=False)

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a TLS client certificate and its key go together: give both")
        if self.ca_file or self.cert_file:
            object.__setattr__(self, "tls", True)
        if any(c in self.token for c in "\r\n\0"):
            raise ValueError("the token contains a line break or NUL")

    @classmethod
    def for_address(
        cls, address: Address, ca_file: str, cert_file: str, key_file: str, token: str
    ) -> ChannelSecurity:
        """The settings for ``address``: TLS on for ``grpcs://`` (or a CA or certificate).

        Raises:
            ValueError: A certificate without its key, or a token with a line break.
        """
        return cls(address.tls, ca_file, cert_file, key_file, token)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS channel credentials, or None for plain text.

        Raises:
            ValueError: A certificate file cannot be read.
        """
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=read_pem(self.ca_file) if self.ca_file else None,
            private_key=read_pem(self.key_file) if self.key_file else None,
            certificate_chain=read_pem(self.cert_file) if self.cert_file else None,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata that carries the token (none without one)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def open_channel(target: str, security: ChannelSecurity, options: Options) -> grpc.Channel:
    """A blocking channel to ``target`` with ``security``'s TLS and token."""
    credentials = security.credentials()
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    if not security.token:
        return channel
    return grpc.intercept_channel(channel, _TokenInterceptor(security.metadata()))


def open_aio_channel(target: str, security: ChannelSecurity, options: Options) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` with ``security``'s TLS and token."""
    metadata = security.metadata()
    # grpc-stubs leaves the aio interceptor type to a cast.
    interceptors = (
        cast(
            "list[grpc.aio.ClientInterceptor]",
            [_AioUnaryToken(metadata), _AioStreamToken(metadata)],
        )
        if metadata
        else None
    )
    credentials = security.credentials()
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


# grpc-stubs makes the interceptor classes generic; grpc's own are not subscriptable.
if TYPE_CHECKING:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.StreamStreamClientInterceptor[Any, Any]
    _AioUnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _AioStreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.UnaryStreamClientInterceptor
    _StreamUnary = grpc.StreamUnaryClientInterceptor
    _StreamStream = grpc.StreamStreamClientInterceptor
    _AioUnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _AioStreamStream = grpc.aio.StreamStreamClientInterceptor


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


def _with_token(details: Any, token: tuple[tuple[str, str], ...]) -> _CallDetails:
    return _CallDetails(
        details.method,
        details.timeout,
        (*(details.metadata or ()), *token),
        details.credentials,
        details.wait_for_ready,
        getattr(details, "compression", None),
    )


class _TokenInterceptor(
    _UnaryUnary,
    _UnaryStream,
    _StreamUnary,
    _StreamStream,
):
    """Adds the token's metadata to every call of a blocking channel."""

    def __init__(self, token: tuple[tuple[str, str], ...]) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._token), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_token(details, self._token), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_token(details, self._token), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_token(details, self._token), requests)


def _aio_details(details: Any, token: tuple[tuple[str, str], ...]) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *token)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _AioUnaryToken(_AioUnaryUnary):
    """Adds the token's metadata to every unary call of an asyncio channel."""

    def __init__(self, token: tuple[tuple[str, str], ...]) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._token), request)


class _AioStreamToken(_AioStreamStream):
    """Adds the token's metadata to every bidirectional stream of an asyncio channel."""

    def __init__(self, token: tuple[tuple[str, str], ...]) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_aio_details(details, self._token), requests)
