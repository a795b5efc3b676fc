"""The HTTP port's routes: /metrics, the dashboard's page and its JSON API (a WSGI app).

Each route names the roles it needs (:data:`~broker.service.auth.HTTP_READ` or
:data:`~broker.service.auth.HTTP_CHANGE`); reads go through the broker's loop
(:mod:`broker.service.loop_calls`), changes through the same functions as AdminService's.
Refusals are JSON ``{"error": ..., "reason": ...}`` with the reason of the gRPC API and the
HTTP status that matches its gRPC code; they are counted with the broker's other refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import grpc
from prometheus_client import CollectorRegistry, make_wsgi_app

from broker.errors import BrokerError, InvalidArgument, NotFound
from broker.service.admin_service import purge_dead_letters, requeue_dead_letters
from broker.service.auth import HTTP_CHANGE, HTTP_READ
from broker.service.loop_calls import LoopUnavailable, call_on_loop, wait_on_loop
from broker.service.runtime import Runtime
from broker.service.status import status_for
from broker.service.web import _views
from broker.service.web._auth import HttpAuth, check_change, session_cookie
from broker.service.web._stats import TaskStats
from broker.service.web._stream import EventStreams
from broker.tokens import Role

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]
Body = Iterable[bytes]

# A change request's JSON body is small: ids of dead letters.
MAX_BODY_BYTES = 1024 * 1024
# Static files of the page, by URL path: (file in broker/service/web/static, content type).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
# Scripts, styles and data only from this server; no framing (clickjacking).
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]
# HTTP statuses of the gRPC codes refusals map to (the mapping gRPC gateways use).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: "400 Bad Request",
    grpc.StatusCode.FAILED_PRECONDITION: "400 Bad Request",
    grpc.StatusCode.UNAUTHENTICATED: "401 Unauthorized",
    grpc.StatusCode.PERMISSION_DENIED: "403 Forbidden",
    grpc.StatusCode.NOT_FOUND: "404 Not Found",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "429 Too Many Requests",
    grpc.StatusCode.UNAVAILABLE: "503 Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    """One request as the routes see it."""

    environ: Environ
    method: str
    path: str

    def query(self, name: str) -> str:
        """The first value of query parameter ``name``, or ""."""
        values = parse_qs(str(self.environ.get("QUERY_STRING", ""))).get(name)
        return values[0] if values else ""

    def json_body(self) -> dict[str, Any]:
        """The request's JSON object.

        Raises:
            InvalidArgument: The body is missing, too large, or not a JSON object.
        """
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            raise InvalidArgument(f"the body must be a JSON object of at most {MAX_BODY_BYTES} B")
        try:
            value = json.loads(self.environ["wsgi.input"].read(length))
        except ValueError:
            raise InvalidArgument("the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise InvalidArgument("the body must be a JSON object")
        return value


@dataclass(frozen=True)
class Response:
    """A route's answer."""

    status: str
    headers: list[tuple[str, str]]
    body: Body


Route = Callable[[Request], Response]


class WebApp:
    """The WSGI application of one broker's HTTP port."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        loop: asyncio.AbstractEventLoop,
        auth: HttpAuth,
        registry: CollectorRegistry,
        stats: TaskStats,
        streams: EventStreams,
        secure: bool,
    ) -> None:
        self._runtime = runtime
        self._loop = loop
        self._auth = auth
        self._metrics = make_wsgi_app(registry)
        self._stats = stats
        self._streams = streams
        self._secure = secure
        self._routes: dict[tuple[str, str], tuple[frozenset[Role] | None, Route]] = {
            ("GET", "/api/session"): (None, self._session),
            ("POST", "/api/login"): (None, self._login),
            ("POST", "/api/logout"): (None, self._logout),
            ("GET", "/api/overview"): (HTTP_READ, self._overview),
            ("GET", "/api/stats"): (HTTP_READ, self._series),
            ("GET", "/api/dead-letters"): (HTTP_READ, self._dead_letters),
            ("POST", "/api/dead-letters/requeue"): (HTTP_CHANGE, self._requeue),
            ("POST", "/api/dead-letters/purge"): (HTTP_CHANGE, self._purge),
            ("GET", "/api/events"): (HTTP_READ, self._events),
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Body:
        """Answer one request (called in the request's thread)."""
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/"))
        request = Request(environ, method, path)
        try:
            if method == "GET" and path in STATIC:
                response = _static(path)
            elif method == "GET" and path == "/metrics":
                self._auth.caller(environ, HTTP_READ, "/metrics")
                return self._metrics(environ, start_response)  # type: ignore[no-any-return]
            else:
                response = self._route(request)
        except BrokerError as error:
            self._record(error, f"HTTP {method} {path[:100]}")
            response = _refusal(error)
        except LoopUnavailable as error:
            response = _json({"error": str(error)}, "503 Service Unavailable")
        start_response(response.status, response.headers)
        return response.body

    def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if method == "GET" and path.startswith("/api/tasks/"):
            self._auth.caller(request.environ, HTTP_READ, "task lookup")
            return self._task(path.removeprefix("/api/tasks/"))
        found = self._routes.get((method, path))
        if found is None:
            raise NotFound(f"no {method} {path[:100]} here (the dashboard is at /)")
        roles, route = found
        if method == "POST":
            check_change(request.environ)
        if roles is not None:
            self._auth.caller(request.environ, roles, path)
        return route(request)

    def _record(self, error: BrokerError, where: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._runtime.refusals.record, error, where)

    # -- session ---------------------------------------------------------------------------

    def _session(self, request: Request) -> Response:
        principal = self._auth.caller(request.environ, HTTP_READ, "the dashboard")
        return _json(
            {
                "auth": self._auth.enabled,
                "name": principal.name,
                "roles": sorted(principal.roles),
                "can_change": not principal.roles.isdisjoint(HTTP_CHANGE),
            }
        )

    def _login(self, request: Request) -> Response:
        token = request.json_body().get("token")
        if not isinstance(token, str) or not token:
            raise InvalidArgument('log in with a JSON body {"token": "..."}')
        login = self._auth.login(token.strip(), HTTP_READ)
        logger.info("dashboard login by token %r", login.principal.name)
        response = _json({"name": login.principal.name})
        response.headers.append(("Set-Cookie", session_cookie(login, self._secure)))
        return response

    def _logout(self, request: Request) -> Response:
        self._auth.logout(request.environ)
        response = _json({})
        response.headers.append(("Set-Cookie", session_cookie(None, self._secure)))
        return response

    # -- reads -----------------------------------------------------------------------------

    def _overview(self, request: Request) -> Response:
        core = self._runtime.broker
        return _json(call_on_loop(self._loop, lambda: _views.read_overview(core, self._stats)))

    def _series(self, request: Request) -> Response:
        core = self._runtime.broker
        return _json(call_on_loop(self._loop, lambda: _views.read_series(core, self._stats)))

    def _dead_letters(self, request: Request) -> Response:
        core, queue = self._runtime.broker, request.query("queue")
        return _json(call_on_loop(self._loop, lambda: _views.read_dead_letters(core, queue)))

    def _task(self, task_id: str) -> Response:
        core = self._runtime.broker
        found = call_on_loop(self._loop, lambda: _views.read_task(core, task_id))
        if found is None:
            raise NotFound(
                f"the broker holds no task {task_id[:100]!r} (never seen, or its result expired "
                "or was forgotten)"
            )
        facts, payloads = found
        facts["args"] = _views.payload_view(payloads["args"], arguments=True)
        facts["result"] = _views.payload_view(payloads["result"])
        facts["progress"] = _views.payload_view(payloads["progress"])
        return _json(facts)

    def _events(self, request: Request) -> Response:
        headers = [*SECURITY_HEADERS, ("Content-Type", "text/event-stream")]
        return Response("200 OK", headers, self._streams.open())

    # -- changes ---------------------------------------------------------------------------

    def _requeue(self, request: Request) -> Response:
        ids, all_, queue = _selection(request.json_body())
        count = wait_on_loop(
            self._loop, requeue_dead_letters(self._runtime, ids, all=all_, queue=queue)
        )
        return _json({"requeued": count})

    def _purge(self, request: Request) -> Response:
        ids, all_, queue = _selection(request.json_body())
        count = wait_on_loop(
            self._loop, purge_dead_letters(self._runtime, ids, all=all_, queue=queue)
        )
        return _json({"purged": count})


def _selection(body: dict[str, Any]) -> tuple[list[str], bool, str]:
    """Which dead letters a change names: ``task_ids``, or ``all`` (within ``queue``)."""
    ids = body.get("task_ids", [])
    all_ = body.get("all", False)
    queue = body.get("queue", "")
    if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise InvalidArgument("task_ids must be a list of task ids")
    if not isinstance(all_, bool) or not isinstance(queue, str):
        raise InvalidArgument("all must be true or false, queue a queue name")
    if bool(ids) == all_:
        raise InvalidArgument("name the dead letters: task_ids, or all (with queue to narrow)")
    return ids, all_, queue


def _json(value: object, status: str = "200 OK") -> Response:
    body = json.dumps(value, separators=(",", ":")).encode()
    headers = [
        *SECURITY_HEADERS,
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    return Response(status, headers, [body])


def _refusal(error: BrokerError) -> Response:
    status = HTTP_STATUS.get(status_for(error), "500 Internal Server Error")
    response = _json({"error": str(error), "reason": error.reason}, status)
    if status.startswith("401"):
        response.headers.append(("WWW-Authenticate", 'Bearer realm="celeriac"'))
    return response


def _static(path: str) -> Response:
    name, content_type = STATIC[path]
    body = resources.files("broker.service.web").joinpath("static", name).read_bytes()
    headers = [
        *SECURITY_HEADERS,
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
    ]
    return Response("200 OK", headers, [body])
