"""Broker configuration: one frozen dataclass, each setting's default and rules in one place.

Precedence is CLI flag > ``CELERIAC_BROKER_<FIELD>`` environment variable > the default below.
(The worker's variables are ``CELERIAC_WORKER_*``; ``CELERIAC_BROKER`` alone is the address
clients and workers connect to.) Every value is checked when the config is built
(:mod:`celeriac.settings`): a bad one is refused at start, naming the flag or variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from broker.journal.store_url import is_postgres, store_problem
from celeriac.address import DEFAULT_HOST, DEFAULT_PORT, PORT_MAX
from celeriac.logs import LOG_FORMATS
from celeriac.settings import (
    at_least,
    greater_than,
    in_range,
    is_host,
    is_log_level,
    load,
    not_empty,
    not_negative,
    one_of,
    positive,
    setting,
    validate,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
# Short names for --accept-content; anything with a "/" is taken as a media type as it is.
CONTENT_TYPE_ALIASES = {"json": "application/json", "pickle": "application/x-python-pickle"}
DAY = 24 * 3600.0
ENV_PREFIX = "CELERIAC_BROKER_"
FSYNC_POLICIES = ("always", "everysec", "no")
# Variables renamed since they were documented: the old name still works (the new one wins).
_RENAMED = {"METRICS_PORT": "HTTP_PORT", "METRICS_HOST": "HTTP_HOST"}


def _shared_problem(value: bool, config: object) -> str | None:
    if value and not is_postgres(getattr(config, "store", "")):
        return "needs a PostgreSQL --store (several brokers share one database)"
    return None


@dataclass(frozen=True)
class BrokerConfig:
    """Everything an operator can tune about the broker.

    Durations are seconds (floats) here; the wire speaks milliseconds.
    """

    # Loopback by default: exposing a queue to the network should be a deliberate choice.
    host: str = setting(DEFAULT_HOST, is_host)
    # 0 asks the OS for a free port.
    port: int = setting(DEFAULT_PORT, in_range(0, PORT_MAX))
    log_level: str = setting("info", is_log_level)
    # Where log lines go (empty: stderr) and as what (celeriac.logs: text, or json per line).
    logfile: str = ""
    log_format: str = setting("text", one_of(*LOG_FORMATS))
    # Celery keeps results for one day by default; users moving over expect the same.
    result_ttl: float = setting(DAY, positive)
    # Bounds memory: when more finished results are stored, the OLDEST finished ones are evicted
    # (logged at WARNING). 1M small results is a few hundred MiB.
    max_results: int = setting(1_000_000, at_least(1))
    # Task arguments and results are meant to be references, not data sets.
    max_payload_bytes: int = setting(1 * MIB, at_least(1))
    # gRPC's own message limit. Larger than max_payload_bytes so that an oversize payload gets
    # our precise error, while a grossly oversize message is refused by gRPC itself.
    max_message_bytes: int = setting(4 * MIB, greater_than("max_payload_bytes"))
    # Unfinished tasks (queued, scheduled or running) the broker accepts before it answers
    # RESOURCE_EXHAUSTED "queue full" rather than growing until the OS kills it.
    max_queued: int = setting(10_000_000, at_least(1))
    # High-water mark of payload bytes held: queued tasks' arguments plus stored results,
    # progress and error texts. Past it, submits are refused (RESOURCE_EXHAUSTED,
    # HELD_BYTES_EXCEEDED) until results expire, are read and forgotten, or tasks finish; a
    # worker's results are always stored, since refusing them would lose finished work. 1 GiB
    # keeps a broker on a small VM (2-4 GiB) clear of the OOM killer, Python's own overhead
    # per task included (max_queued bounds that); raise it on a bigger machine.
    max_held_bytes: int = setting(1 * GIB, at_least(1))
    # Distinct queue names known at once (each costs ~8 KiB); idle queues are released first.
    # Deployments use a handful; a client making names up per request must not grow the broker.
    max_queues: int = setting(10_000, at_least(1))
    # GetResult calls held waiting on one Session stream, and on all calls and streams from
    # one peer address. Each costs a task and a waiter (~2 KiB); the answer of a result read
    # by many waiters is one shared encoded copy, so they cost no result bytes each.
    max_held_calls_per_stream: int = setting(10_000, at_least(1))
    max_held_calls_per_peer: int = setting(50_000, at_least(1))
    # Open sessions (client Session streams plus worker sessions) from one peer address. Many
    # workers and client processes on one host share its address: keep it well above them.
    max_sessions_per_peer: int = setting(1_000, at_least(1))
    # Specs in one SubmitMany: big enough for throughput, small enough to validate in one go.
    max_batch: int = setting(10_000, at_least(1))
    # Workflows: the tasks one task may wait for (a chord's members), and how many links deep
    # a chain of waiting tasks may go. A task's wait costs ~100 bytes per parent.
    max_dependencies: int = setting(100_000, at_least(1))
    max_workflow_depth: int = setting(10_000, at_least(1))
    # Workers are pinged this often and dropped after missing pings this long: a dead host is
    # noticed within seconds, not after a 30-minute visibility timeout.
    ping_interval: float = setting(2.0, positive)
    ping_timeout: float = setting(6.0, greater_than("ping_interval"))
    # After a stream ends, a worker has this long to reconnect and reclaim its leases before
    # they are requeued (covers a brief network blip without re-running work).
    lease_grace: float = setting(2.0, not_negative)
    # A task with a hard time limit loses its lease this long after the limit passed: the
    # worker normally kills it first; this is the backstop for a hung worker.
    lease_margin: float = setting(5.0, not_negative)
    # A task whose worker died this many times is poison: it fails instead of killing more.
    max_deliveries: int = setting(5, at_least(1))
    # The longest a GetResult call is held at the broker; clients loop for longer waits.
    max_wait: float = setting(60.0, positive)
    # How long an idempotency key is remembered when the spec does not say.
    idempotency_window: float = setting(3600.0, positive)
    # Dead letters are for a human to look at; a week covers a long weekend.
    dead_letter_ttl: float = setting(7 * DAY, positive)
    # Dead letters keep their arguments (so they can be requeued), so a failure storm must not
    # grow them without end: past this many, the OLDEST are dropped (logged at WARNING).
    max_dead_letters: int = setting(100_000, at_least(1))
    # On SIGTERM, in-flight calls get this long to finish before the server closes.
    shutdown_grace: float = setting(5.0, not_negative)
    # The daemon freezes long-lived objects out of the cycle collector's way and collects
    # everything this often (one pause in proportion to what it holds; see broker.collector).
    gc_thaw_interval: float = setting(3600.0, positive)
    # Durable by default, like Redis: the journal lives in ./celeriac-data (relative to the
    # working directory, as Redis keeps dump.rdb in its own), so the plain command keeps state
    # across restarts with nothing to configure. CELERIAC_DATA_DIR is accepted too.
    data_dir: str = setting("celeriac-data", not_empty)
    # Keep everything in memory only: a restart or crash loses every task and result.
    memory_only: bool = setting(False)
    # When acknowledged changes reach stable storage: "always" (before the answer), "everysec"
    # (the default, like Redis's appendfsync) or "no" (the OS decides). See README Durability.
    fsync: str = setting("everysec", one_of(*FSYNC_POLICIES))
    # Where the journal's rows live: empty for the embedded SQLite journal in data_dir, or a
    # PostgreSQL URL (postgresql://user@host:port/db; see docs/postgresql.md). Never logged
    # with its password.
    store: str = setting("", store_problem)
    # Apply missing PostgreSQL schema migrations at start rather than refusing to start
    # (python -m broker migrate does it on its own).
    migrate: bool = setting(False)
    # Share the PostgreSQL --store with other brokers, each an interchangeable front end
    # (docs/postgresql.md says what is kept across brokers and what is not yet).
    shared: bool = setting(False, _shared_problem)
    # With --shared: a broker whose heartbeat (every fifth of this) is older than this is
    # presumed dead, and another takes its tasks over. Long enough to ride out a GC pause or
    # a database failover's seconds, short enough that a dead broker's work comes back soon.
    broker_timeout: float = setting(5.0, positive)
    # TLS: the server's certificate chain and key (PEM files). Both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    # Mutual TLS: a CA bundle; when set, every peer must present a certificate it signed.
    tls_client_ca: str = ""
    # Bearer tokens with roles (format: broker.tokens). With none, every call is allowed, so
    # the broker refuses a non-loopback address unless `insecure` says the operator meant it.
    tokens_file: str = ""
    # Inline entries (CELERIAC_BROKER_TOKENS); never in a repr, and no check quotes them.
    tokens: str = dataclasses.field(default="", repr=False)
    insecure: bool = False
    # Content types of task arguments the broker accepts: a plain string comparison, the
    # broker never decodes payloads. Pickle runs code where it is loaded, so it is opt-in.
    accept_content: str = setting("json", lambda value, _: _content_types_problem(value))

    # Events one Events subscriber may have waiting; past it they are dropped and counted, so a
    # slow reader never slows the broker. A reader keeping up holds a handful.
    events_buffer: int = setting(10_000, at_least(1))

    # The HTTP port (Prometheus /metrics and the dashboard, broker.service.web): off (-1) unless
    # a port is given (0 picks a free one); loopback unless http_host says otherwise. It was
    # named metrics_port first: --metrics-port and CELERIAC_BROKER_METRICS_PORT still work.
    http_port: int = setting(-1, in_range(-1, PORT_MAX))
    http_host: str = setting(DEFAULT_HOST, is_host)

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        values: Mapping[str, object] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> BrokerConfig:
        """Build a config from ``CELERIAC_BROKER_*`` variables (``CELERIAC_BROKER_RESULT_TTL=60``).

        Args:
            environ: The environment to read; ``os.environ`` when omitted.
            values: Values that win over the environment (flags); None values are ignored.
            labels: How each of ``values`` was spelled (``{"port": "--port"}``), for errors.

        Returns:
            The defaults, overridden by every variable that is set, then by ``values``.

        Raises:
            InvalidSetting: A value does not parse or breaks its rule; the message names it.
        """
        env = dict(os.environ if environ is None else environ)
        if f"{ENV_PREFIX}DATA_DIR" not in env and "CELERIAC_DATA_DIR" in env:
            env[f"{ENV_PREFIX}DATA_DIR"] = env["CELERIAC_DATA_DIR"]  # the name issue 13 uses
        for old, new in _RENAMED.items():
            if f"{ENV_PREFIX}{new}" not in env and f"{ENV_PREFIX}{old}" in env:
                env[f"{ENV_PREFIX}{new}"] = env[f"{ENV_PREFIX}{old}"]
        return load(cls, env, prefix=ENV_PREFIX, values=values, labels=labels)

    def accepted_content_types(self) -> frozenset[str]:
        """The media types of ``accept_content`` (``json,pickle`` -> their full names)."""
        names = (part.strip() for part in self.accept_content.split(","))
        return frozenset(CONTENT_TYPE_ALIASES.get(name, name) for name in names if name)

    def replace(self, **changes: object) -> BrokerConfig:
        """Return a copy with ``changes`` applied (None values are ignored)."""
        kept = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, **kept)  # type: ignore[arg-type]


def _content_types_problem(value: str) -> str | None:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        return "names no content type"
    for name in names:
        if name not in CONTENT_TYPE_ALIASES and "/" not in name:
            return f"has {name[:40]!r}, which is not json, pickle or a media type (type/subtype)"
    return None
