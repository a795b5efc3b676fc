"""Broker addresses: the one parser that the admin commands, workers and clients share.

Accepted forms, with the same answer in every program:

* ``host:port`` and ``grpc://host:port``: plain text;
* ``grpcs://host:port``: TLS on (:attr:`Address.tls`);
* ``[::1]:7475``: an IPv6 literal goes in brackets, with or without a scheme;
* ``host``: a bare host means the default port, 7475;
* several of these, comma-separated (``10.0.0.1:7475,10.0.0.2:7475``): brokers sharing one
  PostgreSQL database (docs/postgresql.md). The connection goes to the first that answers and
  moves to the next when it fails (gRPC's ``pick_first`` over the list). All must be plain or
  all TLS. A DNS name with several records does the same with the single-address form.

A trailing ``/`` is tolerated. Connecting needs a port from 1 to 65535 (0, "any free port",
only makes sense when binding, which the broker's ``--host``/``--port`` do).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
# 7475 is unassigned by IANA and easy to remember.
DEFAULT_PORT = 7475
DEFAULT_ADDRESS = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
FORMS = (
    "host:port, grpc://host:port, grpcs://host:port, [ipv6]:port or a bare host (port 7475), "
    "or several of these comma-separated"
)
PORT_MAX = 65535

_SCHEMES = {"grpc": False, "grpcs": True}
_ADDRESS = re.compile(
    r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?"
    r"(?P<host>\[[^\]/]*\]|[^:/\[\]]+)"
    r"(?::(?P<port>[^/]*))?/?$"
)
# Host names and IPv4 literals: letters, digits, dots, hyphens (underscores for container names).
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


class AddressError(ValueError):
    """A broker address that none of the accepted forms matches.

    Attributes:
        text: The address as given.
        problem: What is wrong with it, phrased to follow the address.
    """

    def __init__(self, text: str, problem: str) -> None:
        super().__init__(f"broker address {text!r} {problem}; accepted forms: {FORMS}")
        self.text = text
        self.problem = problem


@dataclass(frozen=True)
class Address:
    """A parsed broker address.

    Attributes:
        host: Host name or IP literal, without brackets.
        port: TCP port, 1-65535.
        tls: True for ``grpcs://``: connect with TLS.
    """

    host: str
    port: int
    tls: bool = False
    # Further brokers of a list, (host, port) each, after this first one.
    others: tuple[tuple[str, int], ...] = ()

    @property
    def target(self) -> str:
        """The target gRPC expects: ``host:port`` (IPv6 literals in brackets).

        For a list, gRPC's ``ipv4:``/``ipv6:`` form of every broker's address, host names
        resolved now (that form takes IP literals only).
        """
        if not self.others:
            return f"{bracketed(self.host)}:{self.port}"
        endpoints = [_resolved(host, port) for host, port in ((self.host, self.port), *self.others)]
        if all(":" not in host for host, _ in endpoints):
            return "ipv4:" + ",".join(f"{host}:{port}" for host, port in endpoints)
        return "ipv6:" + ",".join(f"[{_as_ipv6(host)}]:{port}" for host, port in endpoints)

    def __str__(self) -> str:
        first = f"{bracketed(self.host)}:{self.port}"
        text = ",".join([first, *(f"{bracketed(h)}:{p}" for h, p in self.others)])
        return f"grpcs://{text}" if self.tls else text


def parse_address(text: str) -> Address:
    """Parse a broker address, or a comma-separated list of them (see the module docstring).

    Raises:
        AddressError: The address (or one of the list) has another form, or its port is not
            1-65535, or a list mixes plain and TLS addresses.
    """
    if "," not in text:
        return _parse_one(text)
    parts = []
    for part in text.split(","):
        try:
            parts.append(_parse_one(part))
        except AddressError as error:  # named within the whole list
            raise AddressError(text, f"has {part.strip()!r}, which {error.problem}") from None
    if len({part.tls for part in parts}) > 1:
        raise AddressError(text, "mixes plain (grpc://) and TLS (grpcs://) brokers")
    first = parts[0]
    others = tuple((part.host, part.port) for part in parts[1:])
    return Address(first.host, first.port, first.tls, others)


def _parse_one(text: str) -> Address:
    stripped = text.strip()
    if not stripped:
        raise AddressError(text, "is empty")
    match = _ADDRESS.match(stripped)
    if match is None:
        bare = stripped.partition("://")[2] or stripped
        if "[" not in bare and (_is_ipv6(bare) or _is_ipv6(bare.rpartition(":")[0])):
            raise AddressError(text, "has an IPv6 host outside brackets")
        raise AddressError(text, "is not an address")
    scheme = match["scheme"]
    if scheme is not None and scheme.lower() not in _SCHEMES:
        raise AddressError(text, f"has the unknown scheme {scheme}://")
    host = _host(text, match["host"])
    port = _port(text, match["port"])
    return Address(host, port, tls=bool(scheme) and _SCHEMES[scheme.lower()])


def host_problem(host: str) -> str | None:
    """What is wrong with a host name or IP literal (brackets allowed around IPv6), or None."""
    if host.startswith("[") and host.endswith("]"):
        return None if _is_ipv6(host[1:-1]) else "is not an IPv6 address in brackets"
    if ":" in host:
        return None if _is_ipv6(host) else "is not a host name or IP address"
    if not _HOST_NAME.match(host):
        return "is not a host name or IP address"
    return None


def _host(text: str, host: str) -> str:
    problem = host_problem(host)
    if problem is not None:
        raise AddressError(text, f"has a host that {problem}")
    return host.removeprefix("[").removesuffix("]")


def bracketed(host: str) -> str:
    """``host`` as it goes before ``:port``: IPv6 literals in brackets, others unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _port(text: str, raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PORT
    if not raw.isdigit():
        raise AddressError(text, f"has the port {raw!r}, which is not a number")
    port = int(raw)
    if not 1 <= port <= PORT_MAX:
        raise AddressError(text, f"has the port {port}, out of range (1-{PORT_MAX})")
    return port


def _resolved(host: str, port: int) -> tuple[str, int]:
    """``host`` as an IP literal (a name is looked up now: gRPC's list form takes only IPs)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return host, port  # gRPC reports the unreachable broker as it would any other
        return str(found[0][4][0]), port
    return host, port


def _as_ipv6(host: str) -> str:
    """An IPv4 literal in IPv6 form, so that a mixed list fits gRPC's ``ipv6:`` scheme."""
    return f"::ffff:{host}" if ":" not in host else host


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
