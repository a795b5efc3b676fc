"""Who may call what: the ONE table from methods to roles, and the interceptor that applies it.

Every call but health checks and reflection must carry ``authorization: Bearer <token>`` in its
metadata (the gRPC convention) once the broker has tokens. The interceptor checks the token and
the role for the method before any handler runs, so a refused call changes nothing: a missing or
unknown token is UNAUTHENTICATED, a known token without the method's role PERMISSION_DENIED.
Streams are checked when they open. Tokens never appear in a message or a log line; the
token's name (from the tokens file) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from broker.errors import BrokerError, PermissionDenied, Unauthenticated
from broker.service.refusals import Refusals
from broker.service.status import abort_with
from broker.tokens import Principal, Role, TokenTable

logger = logging.getLogger(__name__)

PRODUCER, WORKER, MONITOR, ADMIN = Role.PRODUCER, Role.WORKER, Role.MONITOR, Role.ADMIN

_TASKS = "/celeriac.v1.TaskService/"
_WORKERS = "/celeriac.v1.WorkerService/"
_ADMIN = "/celeriac.v1.AdminService/"

# Method -> the roles that may call it. Admin may call everything. A method missing here is
# admin-only (a test holds every method of the three services to an entry).
METHOD_ROLES: dict[str, frozenset[Role]] = {
    _TASKS + "Submit": frozenset({PRODUCER, ADMIN}),
    _TASKS + "SubmitMany": frozenset({PRODUCER, ADMIN}),
    _TASKS + "Revoke": frozenset({PRODUCER, ADMIN}),
    _TASKS + "Forget": frozenset({PRODUCER, ADMIN}),
    _TASKS + "Session": frozenset({PRODUCER, ADMIN}),
    # Workers read results too: a task may wait on another task's result.
    _TASKS + "GetResult": frozenset({PRODUCER, WORKER, ADMIN}),
    _TASKS + "GetResults": frozenset({PRODUCER, WORKER, ADMIN}),
    _TASKS + "ServerInfo": frozenset({PRODUCER, WORKER, ADMIN}),
    _WORKERS + "Session": frozenset({WORKER, ADMIN}),
    _ADMIN + "ListQueues": frozenset({MONITOR, ADMIN}),
    _ADMIN + "ListWorkers": frozenset({MONITOR, ADMIN}),
    _ADMIN + "ListDeadLetters": frozenset({MONITOR, ADMIN}),
    _ADMIN + "RequeueDeadLetters": frozenset({ADMIN}),
    _ADMIN + "PurgeDeadLetters": frozenset({ADMIN}),
    _ADMIN + "PurgeQueue": frozenset({ADMIN}),
    _ADMIN + "ListPeriodicTasks": frozenset({MONITOR, ADMIN}),
    _ADMIN + "RemovePeriodicTask": frozenset({ADMIN}),
    _ADMIN + "SetRateLimit": frozenset({ADMIN}),
    _ADMIN + "Events": frozenset({MONITOR, ADMIN}),
    # Admin only, inspect included: the same call shuts workers down and resizes their pools.
    _ADMIN + "ControlWorkers": frozenset({ADMIN}),
}
ADMIN_ONLY = frozenset({ADMIN})

# The broker's HTTP port (broker.service.web): what reads (/metrics, the dashboard's pages and
# JSON, its live events) and what changes something (the dashboard's requeue and purge).
HTTP_READ = frozenset({MONITOR, ADMIN})
HTTP_CHANGE = ADMIN_ONLY

# Open to anyone who reaches the port: load balancers probe health without credentials, and
# reflection describes only the public contract (the same as proto/), never data.
OPEN_SERVICES = (f"/{health.SERVICE_NAME}/", f"/{reflection.SERVICE_NAME}/")

_SCHEME = "bearer "
# How long a refused stream waits for its first message (see _refusal).
_FIRST_MESSAGE_WAIT = 1.0
_ASK_FOR_TOKEN = (
    "this broker requires a bearer token (call metadata 'authorization: Bearer <token>'; "
    "the client, worker and admin CLI read it from CELERIAC_TOKEN or --token)"
)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


def roles_for(method: str) -> frozenset[Role]:
    """The roles that may call ``method`` (a full ``/package.Service/Method`` name)."""
    return METHOD_ROLES.get(method, ADMIN_ONLY)


def authorize(tokens: TokenTable, method: str, metadata: Sequence[tuple[str, Any]]) -> Principal:
    """Check a call's bearer token and its role for ``method``.

    Raises:
        Unauthenticated: No bearer token, or one the broker does not know.
        PermissionDenied: The token's roles do not include one that may call ``method``.
    """
    token = bearer_token(metadata)
    if token is None:
        raise Unauthenticated(_ASK_FOR_TOKEN)
    principal = tokens.authenticate(token)
    if principal is None:
        raise Unauthenticated("the bearer token is not one this broker knows")
    check_role(principal, roles_for(method), method.lstrip("/"))
    return principal


def check_role(principal: Principal, allowed: frozenset[Role], what: str) -> None:
    """Check that ``principal`` holds one of ``allowed`` to do ``what``.

    Raises:
        PermissionDenied: It holds none of them; the message names the token and the roles.
    """
    if principal.roles.isdisjoint(allowed):
        held = ",".join(sorted(principal.roles))
        needed = " or ".join(sorted(allowed))
        raise PermissionDenied(f"token {principal.name!r} has role {held}; {what} needs {needed}")


if TYPE_CHECKING:  # grpc-stubs makes the class generic; grpc's own is not subscriptable
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_ServerInterceptor):
    """Refuses calls without a token of a role that may call the method (see METHOD_ROLES)."""

    def __init__(self, tokens: TokenTable, refusals: Refusals) -> None:
        self._tokens = tokens
        self._refusals = refusals

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        """Pass the call on, or answer it with the refusal before any handler runs."""
        method = handler_call_details.method
        if method.startswith(OPEN_SERVICES):
            return await continuation(handler_call_details)
        try:
            authorize(self._tokens, method, handler_call_details.invocation_metadata or ())
        except BrokerError as error:
            self._refusals.record(error, method.lstrip("/"))
            handler = await continuation(handler_call_details)
            # No handler: an unknown method, which gRPC answers UNIMPLEMENTED.
            return handler if handler is None else _refusal(handler, error)
        return await continuation(handler_call_details)


def bearer_token(metadata: Sequence[tuple[str, Any]]) -> str | None:
    """The token of the ``authorization: Bearer <token>`` entry, or None."""
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            if value[: len(_SCHEME)].lower() == _SCHEME:
                return value[len(_SCHEME) :].strip()
            return None
    return None


def _refusal(handler: Handler, error: BrokerError) -> Handler:
    """A handler of the same shape as ``handler`` that only aborts with ``error``."""

    async def refuse(_request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await abort_with(context, error)

    async def refuse_stream(_requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        # Ending a stream while its client is still sending its first message makes gRPC's
        # client report INTERNAL ("Internal error from Core") instead of this status about
        # half the time; the first message is taken (undecoded) before the refusal.
        with contextlib.suppress(TimeoutError, grpc.RpcError):
            async with asyncio.timeout(_FIRST_MESSAGE_WAIT):
                await context.read()
        await abort_with(context, error)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse_stream)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)
