"""The broker's security settings, checked once at start: TLS, tokens and the loopback rule.

On by default: the broker binds loopback only, accepts JSON arguments only, and refuses to listen
beyond loopback with no tokens unless the operator passes ``--insecure``. TLS (``--tls-cert``
and ``--tls-key``) and mutual TLS (``--tls-client-ca``) are the operator's to turn on: they need
certificates only the operator has.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc

from broker.config import BrokerConfig
from broker.tokens import TokenTable, load_tokens
from celeriac.connection import read_pem


@dataclass(frozen=True)
class ServerSecurity:
    """What :class:`~broker.service.server.BrokerServer` needs: credentials and tokens.

    Attributes:
        credentials: TLS server credentials, or None for plain text.
        mutual: Whether clients must present a certificate signed by ``--tls-client-ca``.
        tokens: The bearer tokens; empty means no authentication.
    """

    credentials: grpc.ServerCredentials | None
    mutual: bool
    tokens: TokenTable

    def describe(self) -> str:
        """The banner's summary, e.g. ``tls on (mutual), auth on (3 tokens)``."""
        tls = "off" if self.credentials is None else "on (mutual)" if self.mutual else "on"
        auth = f"on ({len(self.tokens)} tokens)" if len(self.tokens) else "off"
        return f"tls {tls}, auth {auth}"


def load_security(config: BrokerConfig) -> ServerSecurity:
    """Read the certificates and tokens ``config`` names and check the loopback rule.

    Raises:
        ValueError: A file cannot be read or is malformed, TLS is half configured, or the
            broker would listen beyond loopback with no tokens and without ``insecure``.
    """
    tokens = load_tokens(config.tokens_file, config.tokens)
    for host in _listened_hosts(config):
        if not len(tokens) and not config.insecure and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host} with no tokens: anyone who reaches it could "
                "submit, read and purge tasks; give --tokens-file, or --insecure to allow it"
            )
    return ServerSecurity(server_credentials(config), bool(config.tls_client_ca), tokens)


def exposure_warnings(config: BrokerConfig, security: ServerSecurity) -> list[str]:
    """What the operator should hear at start about a broker listening beyond loopback."""
    warnings: list[str] = []
    for host in _listened_hosts(config):
        if is_loopback(host):
            continue
        if not len(security.tokens):
            warnings.append(
                f"authentication is off on {host} (--insecure): anyone who reaches it "
                "may submit, read and purge tasks"
            )
        elif security.credentials is None:
            warnings.append(
                f"TLS is off on {host}: bearer tokens and task arguments travel in "
                "plain text (give --tls-cert and --tls-key)"
            )
    return list(dict.fromkeys(warnings))


def _listened_hosts(config: BrokerConfig) -> list[str]:
    """The gRPC host, and the HTTP port's (metrics, dashboard) when it is on."""
    return [config.host, *([config.http_host] if config.http_port >= 0 else [])]


def server_credentials(config: BrokerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``tls_cert``/``tls_key`` (and ``tls_client_ca`` for mutual TLS).

    Raises:
        ValueError: Only one of cert and key is set, a CA without them, or a file is unreadable.
    """
    if not config.tls_cert and not config.tls_key:
        if config.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (config.tls_cert and config.tls_key):
        raise ValueError("--tls-cert and --tls-key go together: give both or neither")
    client_ca = read_pem(config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read_pem(config.tls_key), read_pem(config.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
