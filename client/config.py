"""The client's configuration: one frozen dataclass, its defaults, and the environment variables.

Precedence, lowest first: the defaults below, ``CELERIAC_*`` environment variables
(:meth:`ClientConfig.from_env`), then explicit arguments to ``Celeriac(...)``. Every value is
checked when the config is built (:mod:`celeriac.settings`), the broker address by the parser
the worker and the admin commands use too (:mod:`celeriac.address`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from celeriac.address import DEFAULT_ADDRESS, Address, parse_address
from celeriac.connection import ChannelSecurity
from celeriac.settings import (
    at_least,
    computed_setting,
    is_address,
    is_time_zone,
    load,
    not_empty,
    positive,
    setting,
    validate,
)
from client.errors import ConfigurationError
from client.serialization import JSON, PICKLE, content_type_for

DEFAULT_BROKER = DEFAULT_ADDRESS
ENV_PREFIX = "CELERIAC_"


@dataclass(frozen=True)
class ClientConfig:
    """How a ``Celeriac`` app reaches the broker and shapes what it sends.

    Attributes:
        broker: Broker address: ``host:port``, ``grpc://host:port``, ``grpcs://host:port``
            (TLS), ``[ipv6]:port`` or a bare host (port 7475).
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
        beat_schedule: Periodic tasks, in Celery's shape (``{"name": {"task": ..., "schedule":
            30.0 | timedelta | crontab(...), "args": ..., "kwargs": ..., "options": ...}}``);
            workers send them to the broker, which runs them (see :mod:`client.periodic`).
        timezone: The IANA time zone crontab entries are read in (Celery's ``timezone``);
            empty: UTC, or the machine's own zone when ``enable_utc`` is off (as in Celery).
        enable_utc: Celery's setting; off, with no ``timezone``, crontabs follow this machine's
            zone (``TZ`` or ``/etc/localtime``). Times on the wire are UTC either way.
        tls_ca: PEM bundle of the CAs that sign the broker's certificate (turns TLS on; the
            system's trust store serves ``grpcs://`` without it).
        tls_cert: PEM client certificate, for a broker that requires mutual TLS.
        tls_key: PEM private key of ``tls_cert``.
        token: Bearer token sent with every call (never shown in ``repr``).
    """

    broker: str = setting(DEFAULT_BROKER, is_address)
    connect_timeout: float = setting(5.0, positive)
    rpc_timeout: float = setting(10.0, positive)
    default_queue: str = setting("default", not_empty)
    task_routes: Mapping[str, Mapping[str, Any] | str] = computed_setting(dict, env="")
    allow_pickle: bool = False
    accept_content: tuple[str, ...] = setting((JSON,), env="")
    task_serializer: str = setting(JSON, env="")
    result_chunk_wait: float = setting(30.0, positive)
    group_chunk_size: int = setting(1000, at_least(1), env="")
    task_always_eager: bool = setting(False, env="")
    task_eager_propagates: bool = setting(False, env="")
    beat_schedule: Mapping[str, Mapping[str, Any]] = computed_setting(dict, env="")
    timezone: str = setting("", is_time_zone)
    enable_utc: bool = True
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    # No check may quote it, so it has none here; ChannelSecurity's never name it.
    token: str = dataclasses.field(default="", repr=False)

    def __post_init__(self) -> None:
        validate(self, ConfigurationError)  # fail at construction, not at the first call
        _ = self.security  # the same: a half-given certificate fails here
        accept = tuple(_content_type(name) for name in self.accept_content)
        if self.allow_pickle and PICKLE not in accept:
            accept = (*accept, PICKLE)  # allowing pickle means accepting it too
        object.__setattr__(self, "accept_content", accept)
        object.__setattr__(self, "task_serializer", _content_type(self.task_serializer))
        object.__setattr__(self, "task_routes", MappingProxyType(dict(self.task_routes)))

    @property
    def address(self) -> Address:
        """The parsed broker address (its ``tls`` says whether to connect with TLS)."""
        return parse_address(self.broker)

    @property
    def target(self) -> str:
        """The broker address in the ``host:port`` form gRPC expects."""
        return self.address.target

    @property
    def security(self) -> ChannelSecurity:
        """TLS and token settings for the channel (celeriac.connection)."""
        try:
            return ChannelSecurity.for_address(
                self.address, self.tls_ca, self.tls_cert, self.tls_key, self.token
            )
        except ValueError as error:
            raise ConfigurationError(str(error)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ClientConfig:
        """Build a config from ``CELERIAC_*`` variables, then apply explicit overrides.

        Variables: ``CELERIAC_BROKER``, ``CELERIAC_CONNECT_TIMEOUT``, ``CELERIAC_RPC_TIMEOUT``,
        ``CELERIAC_DEFAULT_QUEUE``, ``CELERIAC_ALLOW_PICKLE`` (1/true/yes),
        ``CELERIAC_RESULT_CHUNK_WAIT``, ``CELERIAC_TLS_CA``, ``CELERIAC_TLS_CERT``,
        ``CELERIAC_TLS_KEY``, ``CELERIAC_TOKEN``.

        Args:
            environ: The environment to read; ``os.environ`` by default.
            **overrides: Field values that win over the environment. None values are ignored.

        Raises:
            ConfigurationError: A variable or override is malformed or unknown.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown client setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return load(cls, environ, prefix=ENV_PREFIX, values=overrides, error=ConfigurationError)


def _content_type(name: str) -> str:
    try:
        return content_type_for(name)
    except Exception as exc:
        raise ConfigurationError(str(exc)) from None
