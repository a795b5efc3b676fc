"""Bearer tokens and the roles they carry: the tokens file, and the constant-time lookup.

A tokens file (``--tokens-file``) holds one entry per line, ``ROLES:NAME:TOKEN``::

    # who may do what; '#' starts a comment
    producer:web-frontend:3q2+7w...
    worker:gpu-pool:Zx81...
    producer,worker:batch-host:Qm5...     # one token with two roles
    admin:ops:k9Pf...

``ROLES`` is one or more of ``producer``, ``worker``, ``monitor`` and ``admin``, comma-separated
(``monitor`` reads: the admin listings, the events stream, /metrics and the dashboard); ``NAME``
says whose token it is (it is what the broker logs, never the token); ``TOKEN`` is the rest of
the line up to the next blank, at least 16 characters (``python -c "import secrets;
print(secrets.token_urlsafe(32))"`` makes a good one). The same entries, separated by blanks,
may come from ``CELERIAC_BROKER_TOKENS`` instead of a file.

The file must not be readable by every user of the machine (like ssh's private keys): the
broker refuses to start otherwise. Tokens are kept only as SHA-256 digests and compared with
:func:`hmac.compare_digest` against every entry, so neither a token nor how much of one matched
shows in memory dumps, logs or timing.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

MIN_TOKEN_LENGTH = 16


class Role(enum.StrEnum):
    """What a token may do; the method table is in broker.service.auth."""

    PRODUCER = "producer"
    WORKER = "worker"
    # Reads what operators see (queues, workers, dead letters, events, metrics, the
    # dashboard) and changes nothing: for Prometheus and read-only dashboard users.
    MONITOR = "monitor"
    ADMIN = "admin"


class TokensError(ValueError):
    """The tokens file or variable cannot be used (the message never contains a token)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a token belongs to: a name for the logs, and its roles."""

    name: str
    roles: frozenset[Role]


class TokenTable:
    """The known tokens, as digests, each with its principal."""

    def __init__(self, entries: Iterable[tuple[str, Principal]] = ()) -> None:
        self._entries = tuple((_digest(token), principal) for token, principal in entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<TokenTable of {len(self._entries)} token(s)>"

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or None; compares against every entry."""
        digest = _digest(token)
        found: Principal | None = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def load_tokens(path: str, inline: str = "") -> TokenTable:
    """Read the tokens file at ``path`` (when set) and the ``inline`` entries.

    Raises:
        TokensError: The file is missing, readable by every user, or an entry is malformed.
    """
    entries: list[tuple[str, Principal]] = []
    if path:
        entries += parse_tokens(_read_private(path), path)
    if inline:
        entries += parse_tokens(inline, "CELERIAC_BROKER_TOKENS")
    seen: set[bytes] = set()
    for token, principal in entries:
        digest = _digest(token)
        if digest in seen:
            raise TokensError(f"the token of {principal.name!r} is listed twice")
        seen.add(digest)
    return TokenTable(entries)


def parse_tokens(text: str, source: str) -> list[tuple[str, Principal]]:
    """Parse ``ROLES:NAME:TOKEN`` entries, one or more per line, ``#`` comments allowed.

    Raises:
        TokensError: An entry is malformed; the message names the line, not the token.
    """
    entries: list[tuple[str, Principal]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for entry in line.split("#", 1)[0].split():
            entries.append(_entry(entry, f"{source} line {number}"))
    return entries


def _entry(entry: str, where: str) -> tuple[str, Principal]:
    parts = entry.split(":", 2)
    if len(parts) != 3 or not parts[1]:
        raise TokensError(f"{where}: an entry is ROLES:NAME:TOKEN")
    roles_text, name, token = parts
    roles: set[Role] = set()
    for role in roles_text.split(","):
        try:
            roles.add(Role(role))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise TokensError(f"{where}: role {role[:20]!r} is not one of {known}") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise TokensError(
            f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_LENGTH} characters"
        )
    return token, Principal(name, frozenset(roles))


def _read_private(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
        if mode & stat.S_IROTH:
            raise TokensError(
                f"tokens file {path} is readable by every user; `chmod o-r {path}` "
                "(0600 or 0640) before the broker uses it"
            )
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise TokensError(f"cannot read tokens file {path}: {error.strerror}") from None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
