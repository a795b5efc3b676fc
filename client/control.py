"""``app.control`` and ``app.control.inspect()``: Celery's remote control, over the broker.

Celery broadcasts control messages through its message broker and gathers replies on a reply
queue. Here one admin call (``AdminService.ControlWorkers``) asks the broker, which sends the
command down each chosen worker's session and answers with the replies that arrived within
``timeout``; workers that stayed silent are listed in ``Inspect.missing``. With tokens
configured these calls need a token with the admin role. Revoke is not a broadcast here: it is
recorded at the broker (``TaskService.Revoke``), so it holds for workers that start later too.

Inspect methods return what Celery's do: a dict keyed by worker id, or None when no worker
answered. ``scheduled()`` is the exception: countdown, eta and retry backoff wait at the
broker, not in a worker, so it returns them under the one key ``"broker"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import control_replies
from celeriac.rates import InvalidRate, parse_rate, rate_text
from celeriac.v1 import admin_pb2
from client import serialization
from client.errors import InvalidTaskSpec

if TYPE_CHECKING:
    from client.app import Celeriac

logger = logging.getLogger(__name__)

# Celery's default time to gather replies, and the most the broker waits.
DEFAULT_TIMEOUT = 1.0
MAX_TIMEOUT = 60.0
# The key scheduled() files the broker's delayed tasks under.
BROKER_KEY = "broker"
# Commands broadcast() knows besides the inspect ones, with the arguments each takes.
_BROADCAST_ARGUMENTS = {
    "ping": set(),
    "shutdown": set(),
    "pool_grow": {"n"},
    "pool_shrink": {"n"},
    "revoke": {"task_id", "terminate", "signal", "reason"},
    "rate_limit": {"task_name", "rate_limit"},
}
_INSPECT_COMMANDS = ("active", "reserved", "scheduled", "registered", "stats", "active_queues")

Destination = str | Sequence[str] | None


class Control:
    """Remote control of tasks and workers, like Celery's ``app.control``."""

    def __init__(self, app: Celeriac) -> None:
        self._app = app

    def inspect(self, destination: Destination = None, timeout: float = DEFAULT_TIMEOUT) -> Inspect:
        """An inspector asking ``destination`` (worker ids; None: every worker)."""
        return Inspect(self._app, destination, timeout)

    def revoke(
        self,
        task_id: str | Sequence[str],
        terminate: bool = False,
        signal: str | int = "SIGTERM",
        reason: str = "",
    ) -> list[str]:
        """Revoke one task id or several, at the broker (never run, or cancelled if running).

        Args:
            task_id: One id or a sequence of ids.
            terminate: Also kill tasks that are running. The process pool kills the child
                running the task (always with SIGKILL: children ignore SIGTERM so that a warm
                shutdown signalled to the whole process group leaves running tasks alone);
                the thread pool reports the task REVOKED at once and raises
                ``TaskRevokedError`` in its thread at the next Python instruction (a thread
                cannot be killed; one blocked in C carries on until it returns); the async pool
                cancels the coroutine.
            signal: Celery's signal name or number; checked, and otherwise as above.
            reason: Stored in the REVOKED results.

        Returns:
            One outcome per id: ``revoked``, ``cancel-sent``, ``already-finished`` or ``unknown``.

        Raises:
            ValueError: ``signal`` names no signal.
        """
        control_replies.signal_number(signal)
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        return self._app.transport.revoke(ids, terminate, reason) if ids else []

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | float | None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]] | None:
        """Override ``task_name``'s global rate limit at the broker, as Celery's command.

        The broker holds the limit for all workers together, so there is no destination: the
        override wins over the rate the workers declare until ``reset_rate_limit``, and is
        journaled (it outlives a broker restart). ``0`` or None lifts the limit.

        Returns:
            With ``reply=True``, ``[{"broker": {"ok": "new rate limit set successfully"}}]``
            (Celery's shape, keyed by the one place that holds the limit); otherwise None.

        Raises:
            ValueError: A destination was given (a global limit is not set per worker).
            InvalidTaskSpec: ``rate_limit`` is not one of Celery's forms.
        """
        del timeout  # a broker call, not a gathering of replies
        if destination:
            raise ValueError(
                "rate_limit holds across every worker at the broker: it takes no destination"
            )
        try:
            text = rate_text(rate_limit)
            parse_rate(rate_limit)
        except InvalidRate as error:
            raise InvalidTaskSpec(str(error)) from None
        request = admin_pb2.SetRateLimitRequest(task_name=task_name, rate_limit=text)
        self._app.transport.set_rate_limit(request)
        return [{BROKER_KEY: {"ok": "new rate limit set successfully"}}] if reply else None

    def reset_rate_limit(self, task_name: str) -> float:
        """Drop ``task_name``'s override: the rate its workers declare applies again.

        Returns:
            The rate now in force, in tasks per second (0.0: no limit).
        """
        request = admin_pb2.SetRateLimitRequest(task_name=task_name, reset=True)
        return self._app.transport.set_rate_limit(request).per_second

    def ping(
        self, destination: Destination = None, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        """``[{worker: {"ok": "pong"}}, ...]`` for every worker that answered in time."""
        return self.broadcast("ping", destination=destination, reply=True, timeout=timeout) or []

    def shutdown(
        self, destination: Destination = None, reply: bool = False, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]] | None:
        """Warm shutdown of workers: they finish running tasks, hand back the rest, exit 0."""
        return self.broadcast("shutdown", destination=destination, reply=reply, timeout=timeout)

    def pool_grow(
        self,
        n: int = 1,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]] | None:
        """Give workers ``n`` more execution slots (process pool: child processes)."""
        return self.broadcast(
            "pool_grow", {"n": n}, destination=destination, reply=reply, timeout=timeout
        )

    def pool_shrink(
        self,
        n: int = 1,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]] | None:
        """Take ``n`` slots from workers (never below one; a running task is never stopped)."""
        return self.broadcast(
            "pool_shrink", {"n": n}, destination=destination, reply=reply, timeout=timeout
        )

    def broadcast(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        destination: Destination = None,
        reply: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[dict[str, Any]] | None:
        """Send a control command by name, as Celery's ``broadcast``.

        Known commands: ping, shutdown, pool_grow, pool_shrink, revoke, rate_limit, and the
        inspect ones (active, reserved, scheduled, registered, stats, active_queues).

        Returns:
            With ``reply=True``, one ``{worker: reply}`` dict per worker that answered in time;
            otherwise None.

        Raises:
            ValueError: An unknown command, or an argument it does not take.
        """
        arguments = dict(arguments or {})
        if command in _INSPECT_COMMANDS:
            if arguments:
                raise ValueError(f"{command} takes no arguments, got {sorted(arguments)}")
            shaped = getattr(self.inspect(destination, timeout), command)() or {}
            return [{worker: value} for worker, value in shaped.items()] if reply else None
        known = _BROADCAST_ARGUMENTS.get(command)
        if known is None:
            supported = ", ".join(sorted([*_BROADCAST_ARGUMENTS, *_INSPECT_COMMANDS]))
            raise ValueError(f"unknown control command {command!r} (supported: {supported})")
        if unknown := set(arguments) - known:
            raise ValueError(f"{command} does not take {sorted(unknown)}")
        if command == "revoke":
            self.revoke(**arguments)
            return None
        if command == "rate_limit":
            return self.rate_limit(**arguments, destination=destination, reply=reply)
        count = int(arguments.get("n", 0))
        if command.startswith("pool_") and count < 1:
            raise ValueError(f"{command} needs n >= 1, got {count}")
        inspector = self.inspect(destination, timeout)
        shaped = inspector.ask(command, count=count) or {}
        return [{worker: value} for worker, value in shaped.items()] if reply else None


class Inspect:
    """Celery's inspector: each method asks the workers and returns ``{worker: reply}``.

    Attributes:
        destination: The worker ids asked (empty: every connected worker).
        timeout: Seconds to gather replies.
        missing: Worker ids that did not answer the last call within ``timeout``.
        unknown: Destination ids with no open session at the broker, in the last call.
    """

    def __init__(self, app: Celeriac, destination: Destination, timeout: float) -> None:
        if not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout must be over 0 and at most {MAX_TIMEOUT:g} s, got {timeout}")
        self._app = app
        self.destination = (
            [destination] if isinstance(destination, str) else list(destination or [])
        )
        self.timeout = timeout
        self.missing: list[str] = []
        self.unknown: list[str] = []

    def ping(self) -> dict[str, Any] | None:
        """``{worker: {"ok": "pong"}}``."""
        return self.ask("ping")

    def active(self) -> dict[str, Any] | None:
        """The tasks each worker is running (Celery's request dicts)."""
        return self.ask("active")

    def reserved(self) -> dict[str, Any] | None:
        """The tasks each worker holds and has not started (its prefetch)."""
        return self.ask("reserved")

    def scheduled(self) -> dict[str, Any]:
        """Tasks waiting for their countdown, eta or retry backoff: ``{"broker": [...]}``.

        Delays live at the broker, so the broker answers (soonest first, at most 1,000), under
        the key ``"broker"`` rather than a worker's; each entry is Celery's ``{"eta",
        "priority", "request"}``.
        """
        response = self._call(control_replies.request("scheduled", (), self.timeout))
        return {BROKER_KEY: control_replies.scheduled(response, self._decode)}

    def registered(self) -> dict[str, Any] | None:
        """The task names each worker can run."""
        return self.ask("registered")

    registered_tasks = registered

    def stats(self) -> dict[str, Any] | None:
        """Each worker's figures: pid, uptime, pool, totals by task name, rusage."""
        return self.ask("stats")

    def active_queues(self) -> dict[str, Any] | None:
        """The queues each worker consumes, in order."""
        return self.ask("active_queues")

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, Any] | None:
        """``{worker: {task_id: [status, request]}}`` for the ids a worker runs or holds."""
        flat = [i for item in ids for i in ([item] if isinstance(item, str) else item)]
        return self.ask("query_task", task_ids=flat)

    def ask(
        self, command: str, *, count: int = 0, task_ids: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """Send ``command`` to the workers; their replies by worker id, or None if none came."""
        request = control_replies.request(
            command, self.destination, self.timeout, count=count, task_ids=task_ids
        )
        response = self._call(request)
        self.missing, self.unknown = list(response.missing), list(response.unknown)
        if self.missing:
            logger.info("no %s reply within %ss from: %s", command, self.timeout, self.missing)
        return control_replies.replies(response, command, self._decode) or None

    def _call(self, request: admin_pb2.ControlWorkersRequest) -> admin_pb2.ControlWorkersResponse:
        return self._app.transport.control_workers(request, self.timeout)

    def _decode(self, body: bytes, content_type: str) -> tuple[list[object], dict[str, object]]:
        allow_pickle = self._app.config.allow_pickle
        return serialization.decode_args(body, content_type, allow_pickle=allow_pickle)
