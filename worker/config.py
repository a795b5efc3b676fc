"""Worker settings: one frozen dataclass with its defaults, read from CELERIAC_* variables.

Precedence, highest first: command-line flags (`cli`), environment variables (`from_env`),
the task module's app (for the broker address only), then the defaults below. Every value is
checked when the config is built (`celeriac.settings`), so a bad one is refused at start.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from celeriac.address import DEFAULT_ADDRESS, parse_address
from celeriac.connection import ChannelSecurity
from celeriac.logs import LOG_FORMATS
from celeriac.settings import (
    at_least,
    computed_setting,
    is_address,
    is_log_level,
    load,
    not_below,
    not_empty,
    not_negative,
    one_of,
    positive,
    setting,
    validate,
)
from worker.errors import ConfigurationError

DEFAULT_BROKER = DEFAULT_ADDRESS
ENV_PREFIX = "CELERIAC_WORKER_"
POOLS = ("process", "thread", "async", "solo")


def _cpu_count() -> int:
    # Like Celery's prefork pool: one child per core, so CPU-bound tasks use every core.
    return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to know to run.

    Attributes:
        tasks: Modules to import for task declarations (e.g. "proj.tasks").
        broker: Broker address (the forms of `celeriac.address`); None means "from the task
            module's app, else 127.0.0.1:7475".
        concurrency: Number of tasks run at once (child processes, threads or coroutines).
        pool: "process" (default, child processes), "thread", "async" or "solo".
        queues: Queues to consume, in order of preference.
        hostname: Worker id shown by the broker; default "celeriac@<host>:<pid>".
        loglevel: Logging level name for the CLI.
        logfile: A file the worker and its children append log lines to (empty: stderr).
        log_format: "text" or "json" (one object per line; see `celeriac.logs`).
        time_limit: Hard limit in seconds for tasks and calls that set none.
        soft_time_limit: Soft limit in seconds for tasks and calls that set none.
        shutdown_grace: Seconds running tasks get to finish on a warm shutdown (Celery has no
            limit by default; 30 s matches the usual container stop timeout).
        allow_pickle: Accept pickled arguments (refused by default: unpickling runs code).
        redirect_stdouts: Log what tasks print (WARNING lines of ``celeriac.redirected``, with
            the task's id, in the worker's log file), as Celery's ``worker_redirect_stdouts``.
        reconnect_initial: First delay before reconnecting to a lost broker.
        reconnect_max: Cap of the exponential reconnect delay (a restarted broker is found
            within this long).
        prefetch_max: The most tasks granted beyond free slots (0: exactly one credit per free
            slot, no prefetch). The worker only prefetches what it finishes in about
            `prefetch_window` at its measured completion rate, so long tasks never wait behind
            others; this cap bounds a wrong estimate.
        prefetch_window: How much work to keep prefetched, in seconds at the worker's measured
            completion rate. 100 ms and a cap of 500 because the buffer has to outlast the
            broker's occasional pauses (a loop turn decoding a large batch, a GC pass: up to
            ~10 ms) and not only one message's trip: with 20 ms and 100, a no-op burst ran at
            ~10.2k tasks/s here, with 100 ms and 500 at ~12.3k (`make bench`, same hour). A
            task that waits behind the buffer waits about this long at most.
        prefetch_hold: Seconds a prefetched task may wait for a slot before it is handed back
            to the broker (to run on another worker), after which the worker stops
            prefetching until one of its running tasks finishes.
        tls_ca: PEM bundle of the CAs that sign the broker's certificate (turns TLS on).
        tls_cert: PEM client certificate, for a broker that requires mutual TLS.
        tls_key: PEM private key of `tls_cert`.
        token: Bearer token of the worker role (never shown in `repr`).
    """

    tasks: tuple[str, ...] = setting((), env="")
    broker: str | None = setting(None, is_address, env="CELERIAC_BROKER")
    concurrency: int = computed_setting(_cpu_count, at_least(1))
    pool: str = setting("process", one_of(*POOLS))
    queues: tuple[str, ...] = setting(("default",), not_empty)
    hostname: str | None = setting(None, not_empty)
    loglevel: str = setting("INFO", is_log_level, env="CELERIAC_LOGLEVEL")
    logfile: str = ""
    log_format: str = setting("text", one_of(*LOG_FORMATS))
    time_limit: float | None = setting(None, positive)
    soft_time_limit: float | None = setting(None, positive)
    shutdown_grace: float = setting(30.0, not_negative)
    allow_pickle: bool = False
    redirect_stdouts: bool = True
    reconnect_initial: float = setting(0.1, positive)
    reconnect_max: float = setting(2.0, positive, not_below("reconnect_initial"))
    prefetch_max: int = setting(500, not_negative)
    prefetch_window: float = setting(0.1, not_negative)
    prefetch_hold: float = setting(1.0, positive)
    tls_ca: str = setting("", env="CELERIAC_TLS_CA")
    tls_cert: str = setting("", env="CELERIAC_TLS_CERT")
    tls_key: str = setting("", env="CELERIAC_TLS_KEY")
    # No check may quote it, so it has none; never in a repr.
    token: str = dataclasses.field(default="", repr=False, metadata={"env": "CELERIAC_TOKEN"})

    def __post_init__(self) -> None:
        validate(self, ConfigurationError)
        self.security(self.broker or DEFAULT_ADDRESS)  # a half-given certificate fails here

    def security(self, address: str) -> ChannelSecurity:
        """TLS and token settings for a channel to `address` (celeriac.connection).

        Raises:
            ConfigurationError: The address is malformed, or a certificate lacks its key.
        """
        try:
            return ChannelSecurity.for_address(
                parse_address(address), self.tls_ca, self.tls_cert, self.tls_key, self.token
            )
        except ValueError as error:
            raise ConfigurationError(str(error)) from None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        flags: tuple[Mapping[str, object], Mapping[str, str]] | None = None,
        **overrides: object,
    ) -> WorkerConfig:
        """Build a config from CELERIAC_* variables, then apply explicit overrides.

        Variables: CELERIAC_BROKER, CELERIAC_LOGLEVEL, and CELERIAC_WORKER_<FIELD> for the
        others (CELERIAC_WORKER_CONCURRENCY, CELERIAC_WORKER_QUEUES=a,b,
        CELERIAC_WORKER_ALLOW_PICKLE=1 ...); CELERIAC_TLS_CA, CELERIAC_TLS_CERT, CELERIAC_TLS_KEY
        and CELERIAC_TOKEN are shared with the client.

        Args:
            environ: The environment to read; os.environ by default.
            flags: Values given as flags and how each was spelled (`celeriac.cli.flag_values`),
                so that an error names the flag; they win over the environment.
            **overrides: Field values that win over the environment (None values are ignored).

        Returns:
            The config.

        Raises:
            ConfigurationError: A variable or override has an invalid value.
        """
        values, labels = flags or ({}, {})
        return load(
            cls,
            environ,
            prefix=ENV_PREFIX,
            values={**values, **overrides},
            labels=labels,
            error=ConfigurationError,
        )


def worker_id(config: WorkerConfig) -> str:
    """The id this worker shows the broker: --hostname, else "celeriac@<host>:<pid>"."""
    return config.hostname or f"celeriac@{socket.gethostname()}:{os.getpid()}"


def grpc_target(address: str) -> str:
    """The ``host:port`` gRPC target of a broker address (see `celeriac.address`).

    Raises:
        ConfigurationError: The address is in none of the accepted forms.
    """
    try:
        return parse_address(address).target
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
