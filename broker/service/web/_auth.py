"""Who may use the HTTP port: bearer tokens or a login cookie, roles, and forged-request checks.

With tokens configured, every request but the static page and its script needs a token of a
role in :data:`broker.service.auth.HTTP_READ` (``monitor`` or ``admin``), and requeue and purge
one in :data:`~broker.service.auth.HTTP_CHANGE` (``admin``). A program (Prometheus, curl) sends
``Authorization: Bearer <token>``; a browser logs in once with the token and gets a session
cookie (HttpOnly, SameSite=Strict, random, held in memory only; the token never lives in the
browser). Changes (POST) must carry the :data:`CHANGE_HEADER` header, which a page of another
site cannot send without the CORS approval this server never gives, and any ``Origin`` must be
this server's. With no tokens, requests must name the broker by an IP address or ``localhost``
(the Host header), so a web page cannot reach a loopback dashboard through DNS rebinding.
Tokens and session ids are never logged.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

from broker.errors import PermissionDenied, Unauthenticated
from broker.service.auth import bearer_token, check_role
from broker.tokens import Principal, Role, TokenTable

SESSION_COOKIE = "celeriac_session"
# A request that changes something carries this header (any value); see the module docstring.
CHANGE_HEADER = "X-Celeriac-Dashboard"
# A login lasts this long; the broker forgets every session when it restarts.
SESSION_SECONDS = 12 * 3600.0
# The oldest logins are forgotten past this many, so logging in in a loop cannot grow memory.
MAX_SESSIONS = 1_000
# Who a request is when the broker has no tokens: anyone who reaches the port may do anything.
NO_AUTH = Principal("anonymous", frozenset({Role.ADMIN}))

Environ = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Login:
    """A browser session: its cookie value, and who logged in."""

    session_id: str
    principal: Principal


class HttpAuth:
    """The tokens, the logged-in sessions, and the checks every request goes through.

    Request threads share one instance: the sessions are guarded by a lock.
    """

    def __init__(self, tokens: TokenTable, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens = tokens
        self._clock = clock
        self._sessions: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether the broker has tokens (else every request is allowed, from a trusted host)."""
        return bool(len(self._tokens))

    def caller(self, environ: Environ, allowed: frozenset[Role], what: str) -> Principal:
        """Who sent the request, if they may do ``what``.

        Raises:
            Unauthenticated: No token or session, or one the broker does not know.
            PermissionDenied: The caller lacks the role, or (no tokens) the Host is a name.
        """
        if not self.enabled:
            _check_host(environ)
            return NO_AUTH
        principal = self._principal(environ)
        check_role(principal, allowed, what)
        return principal

    def login(self, token: str, allowed: frozenset[Role]) -> Login:
        """Open a session for ``token`` if its role may read the dashboard.

        Raises:
            Unauthenticated: The token is not one the broker knows.
            PermissionDenied: Its role may not read the dashboard.
        """
        principal = self._tokens.authenticate(token)
        if principal is None:
            raise Unauthenticated("the token is not one this broker knows")
        check_role(principal, allowed, "the dashboard")
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = (principal, self._clock() + SESSION_SECONDS)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return Login(session_id, principal)

    def logout(self, environ: Environ) -> None:
        """Forget the request's session, if it has one."""
        session_id = _cookie(environ)
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)

    def _principal(self, environ: Environ) -> Principal:
        header = environ.get("HTTP_AUTHORIZATION")
        if isinstance(header, str):
            token = bearer_token([("authorization", header)])
            principal = self._tokens.authenticate(token) if token is not None else None
            if principal is None:
                raise Unauthenticated("the bearer token is not one this broker knows")
            return principal
        session_id = _cookie(environ)
        if session_id:
            with self._lock:
                found = self._sessions.get(session_id)
                if found is not None and found[1] > self._clock():
                    return found[0]
                self._sessions.pop(session_id, None)
            raise Unauthenticated("the login has expired or the broker restarted; log in again")
        raise Unauthenticated(
            "this broker requires a token: 'Authorization: Bearer <token>', or log in "
            "on the dashboard"
        )


def check_change(environ: Environ) -> None:
    """Refuse a change request that a page of another site could have sent.

    Raises:
        PermissionDenied: The change header is missing, or the Origin is another site's.
    """
    if f"HTTP_{CHANGE_HEADER.upper().replace('-', '_')}" not in environ:
        raise PermissionDenied(
            f"a change needs the {CHANGE_HEADER} header (the dashboard sends it)"
        )
    origin = environ.get("HTTP_ORIGIN")
    if isinstance(origin, str) and origin.split("://", 1)[-1] != environ.get("HTTP_HOST"):
        raise PermissionDenied("a change from another site's page is refused")


def _check_host(environ: Environ) -> None:
    host = str(environ.get("HTTP_HOST", ""))
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return
    try:
        ipaddress.ip_address(name)
    except ValueError:
        raise PermissionDenied(
            f"with no tokens this port answers only requests to an IP address or localhost, "
            f"not {name[:100]!r} (give the broker --tokens-file to use a host name)"
        ) from None


def _cookie(environ: Environ) -> str:
    header = environ.get("HTTP_COOKIE")
    if not isinstance(header, str):
        return ""
    try:
        morsel = SimpleCookie(header).get(SESSION_COOKIE)
    except CookieError:
        return ""
    return morsel.value if morsel is not None else ""


def session_cookie(login: Login | None, secure: bool) -> str:
    """The Set-Cookie value that stores ``login`` (or clears the cookie when None)."""
    value, age = (login.session_id, int(SESSION_SECONDS)) if login else ("", 0)
    flags = "; Secure" if secure else ""
    return f"{SESSION_COOKIE}={value}; Max-Age={age}; Path=/; HttpOnly; SameSite=Strict{flags}"
