"""The client's configuration: one frozen dataclass, its defaults, and the environment variables.

Precedence, lowest first: the defaults below, ``CELERIAC_*`` environment variables
(:meth:`ClientConfig.from_env`), then explicit arguments to ``Celeriac(...)``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from client.errors import ConfigurationError
from client.serialization import JSON, PICKLE, content_type_for

DEFAULT_BROKER = "127.0.0.1:7475"
DEFAULT_PORT = 7475

# host:port, [ipv6]:port, or a bare host; an optional grpc:// scheme in front.
_ADDRESS = re.compile(r"^(?:grpc://)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\[\]]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class ClientConfig:
    """How a ``Celeriac`` app reaches the broker and shapes what it sends.

    Attributes:
        broker: Broker address, ``host:port`` or ``grpc://host:port``.
        connect_timeout: Seconds to wait for a connection before raising ``BrokerUnavailable``.
            5 s is long enough for a broker that is starting, short enough to fail a request.
        rpc_timeout: Deadline in seconds for one call, on top of any server-side wait.
        default_queue: Queue for tasks that no call option, route or task option places.
        task_routes: Task name (or glob such as ``"tasks.*"``) to options, e.g.
            ``{"tasks.add": {"queue": "math"}}``; a plain string is a queue name.
        allow_pickle: Accept pickle for arguments and results (it runs code when loaded).
        accept_content: Content types this client decodes results from.
        task_serializer: Serializer for tasks sent by name (``send_task``) or with no option.
        result_chunk_wait: Longest single server-side wait, in seconds, while ``get()`` waits;
            a longer ``get()`` repeats the wait. The broker caps it too (60 s).
        group_chunk_size: Largest number of tasks per batch submit or batch result call.
        task_always_eager: ``delay()`` and ``apply_async()`` run the task here and now instead
            of sending it (Celery's setting, for tests; see :mod:`client.eager`).
        task_eager_propagates: An eagerly run task's failure is raised at once.
    """

    broker: str = DEFAULT_BROKER
    connect_timeout: float = 5.0
    rpc_timeout: float = 10.0
    default_queue: str = "default"
    task_routes: Mapping[str, Mapping[str, Any] | str] = field(default_factory=dict)
    allow_pickle: bool = False
    accept_content: tuple[str, ...] = (JSON,)
    task_serializer: str = JSON
    result_chunk_wait: float = 30.0
    group_chunk_size: int = 1000
    task_always_eager: bool = False
    task_eager_propagates: bool = False

    def __post_init__(self) -> None:
        parse_broker_address(self.broker)  # fail at construction, not at the first call
        for name in ("connect_timeout", "rpc_timeout", "result_chunk_wait"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.group_chunk_size < 1:
            raise ConfigurationError(f"group_chunk_size must be >= 1, got {self.group_chunk_size}")
        if not self.default_queue:
            raise ConfigurationError("default_queue must not be empty")
        accept = tuple(_content_type(name) for name in self.accept_content)
        if self.allow_pickle and PICKLE not in accept:
            accept = (*accept, PICKLE)  # allowing pickle means accepting it too
        object.__setattr__(self, "accept_content", accept)
        object.__setattr__(self, "task_serializer", _content_type(self.task_serializer))
        object.__setattr__(self, "task_routes", MappingProxyType(dict(self.task_routes)))

    @property
    def target(self) -> str:
        """The broker address in the ``host:port`` form gRPC expects."""
        return parse_broker_address(self.broker)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Build a config from ``CELERIAC_*`` variables, then apply explicit overrides.

        Variables: ``CELERIAC_BROKER``, ``CELERIAC_CONNECT_TIMEOUT``, ``CELERIAC_RPC_TIMEOUT``,
        ``CELERIAC_DEFAULT_QUEUE``, ``CELERIAC_ALLOW_PICKLE`` (1/true/yes),
        ``CELERIAC_RESULT_CHUNK_WAIT``.

        Args:
            environ: The environment to read; ``os.environ`` by default.
            **overrides: Field values that win over the environment. None values are ignored.

        Raises:
            ConfigurationError: A variable or override is malformed or unknown.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        readers: dict[str, tuple[str, Callable[[str], object]]] = {
            "broker": ("CELERIAC_BROKER", str),
            "connect_timeout": ("CELERIAC_CONNECT_TIMEOUT", float),
            "rpc_timeout": ("CELERIAC_RPC_TIMEOUT", float),
            "default_queue": ("CELERIAC_DEFAULT_QUEUE", str),
            "allow_pickle": ("CELERIAC_ALLOW_PICKLE", _flag),
            "result_chunk_wait": ("CELERIAC_RESULT_CHUNK_WAIT", float),
        }
        for name, (variable, convert) in readers.items():
            raw = env.get(variable)
            if raw:
                try:
                    values[name] = convert(raw)
                except ValueError:
                    raise ConfigurationError(f"{variable}={raw!r} is not valid") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown client setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def parse_broker_address(address: str) -> str:
    """Return the ``host:port`` gRPC target for a broker address.

    Accepted forms: ``host:port``, ``grpc://host:port``, ``[ipv6]:port``, and a bare ``host``
    (port 7475).

    Raises:
        ConfigurationError: The address has another form, or the port is out of range.
    """
    match = _ADDRESS.match(address.strip())
    if match is None:
        raise ConfigurationError(f"broker address {address!r} is not host:port or grpc://host:port")
    port = int(match["port"] or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ConfigurationError(f"broker address {address!r} has port {port}, not 1..65535")
    return f"{match['host']}:{port}"


def _content_type(name: str) -> str:
    try:
        return content_type_for(name)
    except Exception as exc:
        raise ConfigurationError(str(exc)) from None


def _flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)
