"""Broker configuration: one frozen dataclass, defaults in one place.

Precedence is CLI flag > ``CELERIAC_BROKER_<FIELD>`` environment variable > the default below.
(The worker's variables are ``CELERIAC_WORKER_*``; ``CELERIAC_BROKER`` alone is the address
clients and workers connect to.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

MIB = 1024 * 1024
DAY = 24 * 3600.0
ENV_PREFIX = "CELERIAC_BROKER_"


@dataclass(frozen=True)
class BrokerConfig:
    """Everything an operator can tune about the broker.

    Durations are seconds (floats) here; the wire speaks milliseconds.
    """

    # Loopback by default: exposing a queue to the network should be a deliberate choice.
    host: str = "127.0.0.1"
    # 7475 is unassigned by IANA and easy to remember; 0 asks the OS for a free port.
    port: int = 7475
    log_level: str = "info"
    # Celery keeps results for one day by default; users moving over expect the same.
    result_ttl: float = DAY
    # Bounds memory: when more finished results are stored, the OLDEST finished ones are evicted
    # (logged at WARNING). 1M small results is a few hundred MiB.
    max_results: int = 1_000_000
    # Task arguments and results are meant to be references, not data sets.
    max_payload_bytes: int = 1 * MIB
    # gRPC's own message limit. Larger than max_payload_bytes so that an oversize payload gets
    # our precise error, while a grossly oversize message is refused by gRPC itself.
    max_message_bytes: int = 4 * MIB
    # Unfinished tasks (queued, scheduled or running) the broker accepts before it answers
    # RESOURCE_EXHAUSTED "queue full" rather than growing until the OS kills it.
    max_queued: int = 10_000_000
    # Specs in one SubmitMany: big enough for throughput, small enough to validate in one go.
    max_batch: int = 10_000
    # Workers are pinged this often and dropped after missing pings this long: a dead host is
    # noticed within seconds, not after a 30-minute visibility timeout.
    ping_interval: float = 2.0
    ping_timeout: float = 6.0
    # After a stream ends, a worker has this long to reconnect and reclaim its leases before
    # they are requeued (covers a brief network blip without re-running work).
    lease_grace: float = 2.0
    # A task with a hard time limit loses its lease this long after the limit passed: the
    # worker normally kills it first; this is the backstop for a hung worker.
    lease_margin: float = 5.0
    # A task whose worker died this many times is poison: it fails instead of killing more.
    max_deliveries: int = 5
    # The longest a GetResult call is held at the broker; clients loop for longer waits.
    max_wait: float = 60.0
    # How long an idempotency key is remembered when the spec does not say.
    idempotency_window: float = 3600.0
    # Dead letters are for a human to look at; a week covers a long weekend.
    dead_letter_ttl: float = 7 * DAY
    # Dead letters keep their arguments (so they can be requeued), so a failure storm must not
    # grow them without end: past this many, the OLDEST are dropped (logged at WARNING).
    max_dead_letters: int = 100_000
    # On SIGTERM, in-flight calls get this long to finish before the server closes.
    shutdown_grace: float = 5.0
    # The daemon freezes long-lived objects out of the cycle collector's way and collects
    # everything this often (one pause in proportion to what it holds; see broker.collector).
    gc_thaw_interval: float = 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerConfig:
        """Build a config from ``CELERIAC_BROKER_*`` variables (``CELERIAC_BROKER_RESULT_TTL=60``).

        Args:
            environ: The environment to read; ``os.environ`` when omitted.

        Returns:
            The defaults, overridden by every variable that is set.

        Raises:
            ValueError: A variable does not parse as its field's type.
        """
        env = os.environ if environ is None else environ
        changes: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"{ENV_PREFIX}{field.name.upper()}")
            if raw is not None:
                changes[field.name] = _parse(field.name, str(field.type), raw)
        return dataclasses.replace(cls(), **changes)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> BrokerConfig:
        """Return a copy with ``changes`` applied (None values are ignored)."""
        kept = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, **kept)  # type: ignore[arg-type]


def _parse(name: str, type_name: str, raw: str) -> object:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_name}") from None
    return raw
