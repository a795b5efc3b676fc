"""Worker settings: one frozen dataclass with its defaults, read from CELERIAC_* variables.

Precedence, highest first: command-line flags (`cli`), environment variables (`from_env`),
the task module's app (for the broker address only), then the defaults below.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker.errors import ConfigurationError

DEFAULT_BROKER = "127.0.0.1:7475"
POOLS = ("process", "thread", "async", "solo")


def _cpu_count() -> int:
    # Like Celery's prefork pool: one child per core, so CPU-bound tasks use every core.
    return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs to know to run.

    Attributes:
        tasks: Modules to import for task declarations (e.g. "proj.tasks").
        broker: Broker address ("host:port" or "grpc://host:port"); None means "from the task
            module's app, else 127.0.0.1:7475".
        concurrency: Number of tasks run at once (child processes, threads or coroutines).
        pool: "process" (default, child processes), "thread", "async" or "solo".
        queues: Queues to consume, in order of preference.
        hostname: Worker id shown by the broker; default "celeriac@<host>:<pid>".
        loglevel: Logging level name for the CLI.
        time_limit: Hard limit in seconds for tasks and calls that set none.
        soft_time_limit: Soft limit in seconds for tasks and calls that set none.
        shutdown_grace: Seconds running tasks get to finish on a warm shutdown (Celery has no
            limit by default; 30 s matches the usual container stop timeout).
        allow_pickle: Accept pickled arguments (refused by default: unpickling runs code).
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
    """

    tasks: tuple[str, ...] = ()
    broker: str | None = None
    concurrency: int = dataclasses.field(default_factory=_cpu_count)
    pool: str = "process"
    queues: tuple[str, ...] = ("default",)
    hostname: str | None = None
    loglevel: str = "INFO"
    time_limit: float | None = None
    soft_time_limit: float | None = None
    shutdown_grace: float = 30.0
    allow_pickle: bool = False
    reconnect_initial: float = 0.1
    reconnect_max: float = 5.0
    prefetch_max: int = 500
    prefetch_window: float = 0.1
    prefetch_hold: float = 1.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.pool not in POOLS:
            raise ConfigurationError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.prefetch_hold <= 0:
            raise ConfigurationError(f"prefetch_hold must be positive, got {self.prefetch_hold}")
        if not self.queues:
            raise ConfigurationError("at least one queue is needed")
        for name, value in (
            ("time_limit", self.time_limit),
            ("soft_time_limit", self.soft_time_limit),
            ("shutdown_grace", self.shutdown_grace),
            ("prefetch_max", self.prefetch_max),
            ("prefetch_window", self.prefetch_window),
        ):
            if value is not None and value < 0:
                raise ConfigurationError(f"{name} must not be negative, got {value}")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> WorkerConfig:
        """Build a config from CELERIAC_* variables, then apply explicit overrides.

        Variables: CELERIAC_BROKER, CELERIAC_WORKER_CONCURRENCY, CELERIAC_WORKER_POOL,
        CELERIAC_WORKER_QUEUES (comma-separated), CELERIAC_WORKER_HOSTNAME, CELERIAC_LOGLEVEL,
        CELERIAC_WORKER_TIME_LIMIT, CELERIAC_WORKER_SOFT_TIME_LIMIT,
        CELERIAC_WORKER_SHUTDOWN_GRACE, CELERIAC_WORKER_ALLOW_PICKLE (1/true/yes),
        CELERIAC_WORKER_PREFETCH_MAX, CELERIAC_WORKER_PREFETCH_WINDOW,
        CELERIAC_WORKER_PREFETCH_HOLD.

        Args:
            environ: The environment to read; os.environ by default.
            **overrides: Field values that win over the environment (None values are ignored).

        Returns:
            The config.

        Raises:
            ConfigurationError: A variable or override has an invalid value.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        readers: dict[str, tuple[str, Callable[[str], object]]] = {
            "broker": ("CELERIAC_BROKER", str),
            "concurrency": ("CELERIAC_WORKER_CONCURRENCY", int),
            "pool": ("CELERIAC_WORKER_POOL", str),
            "queues": ("CELERIAC_WORKER_QUEUES", split_names),
            "hostname": ("CELERIAC_WORKER_HOSTNAME", str),
            "loglevel": ("CELERIAC_LOGLEVEL", str),
            "time_limit": ("CELERIAC_WORKER_TIME_LIMIT", float),
            "soft_time_limit": ("CELERIAC_WORKER_SOFT_TIME_LIMIT", float),
            "shutdown_grace": ("CELERIAC_WORKER_SHUTDOWN_GRACE", float),
            "allow_pickle": ("CELERIAC_WORKER_ALLOW_PICKLE", _parse_bool),
            "prefetch_max": ("CELERIAC_WORKER_PREFETCH_MAX", int),
            "prefetch_window": ("CELERIAC_WORKER_PREFETCH_WINDOW", float),
            "prefetch_hold": ("CELERIAC_WORKER_PREFETCH_HOLD", float),
        }
        for field_name, (variable, parse) in readers.items():
            raw = env.get(variable)
            if raw:
                try:
                    values[field_name] = parse(raw)
                except ValueError as exc:
                    raise ConfigurationError(f"{variable}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def worker_id(config: WorkerConfig) -> str:
    """The id this worker shows the broker: --hostname, else "celeriac@<host>:<pid>"."""
    return config.hostname or f"celeriac@{socket.gethostname()}:{os.getpid()}"


def split_names(text: str) -> tuple[str, ...]:
    """Split "a, b,c" into ("a", "b", "c"), dropping empty items."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def grpc_target(address: str) -> str:
    """Turn a broker address ("host:port" or "grpc://host:port") into a gRPC target.

    Raises:
        ConfigurationError: The address has no port.
    """
    target = address.removeprefix("grpc://").rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"broker address must be host:port, got {address!r}")
    return target
