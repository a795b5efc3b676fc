"""Periodic tasks as a Celery app declares them, ready for the broker.

An app declares entries the way Celery code does::

    app.conf.beat_schedule = {
        "cleanup every 30 s": {"task": "tasks.cleanup", "schedule": 30.0},
        "report at 7:30": {"task": "tasks.report", "schedule": crontab(minute=30, hour=7),
                           "args": ("daily",), "options": {"queue": "reports", "expires": 600}},
    }

    @app.on_after_configure.connect
    def setup(sender, **kwargs):
        sender.add_periodic_task(10.0, ping.s("hello"), name="ping every 10 s")

There is no beat process: every worker sends its apps' entries to the broker when it connects
(its session hello), and the broker runs each entry once per tick, whatever number of workers
declared it. Entries are upserted by name; ``python -m broker periodic list`` shows them and
``python -m broker periodic remove NAME`` drops one. ``expires`` in an entry's options counts
from the tick (so a catch-up run older than that never runs).

Crontab entries are read in the app's time zone, as Celery reads them: ``app.conf.timezone``
(an IANA name), else UTC, else, with ``enable_utc`` off, this machine's own zone. The worker
sends the zone's name with the entry and the broker keeps the time in it (daylight-saving
changes included), so the broker's own zone never matters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celeriac.settings import is_time_zone
from client.errors import InvalidTaskSpec
from client.options import CallOptions, build_spec
from client.records import SubmitSpec
from client.schedules import crontab, interval_seconds, schedule

if TYPE_CHECKING:
    from client.app import Celeriac

# Keys of a beat_schedule entry, as in Celery.
_ENTRY_KEYS = frozenset({"task", "schedule", "args", "kwargs", "options"})
# Per-run values the broker sets from the tick: an entry may not fix them.
_FROM_THE_TICK = ("task_id", "countdown", "eta", "idempotency_key")


@dataclass(frozen=True)
class PeriodicEntry:
    """One entry, resolved and encoded.

    Attributes:
        name: The entry's name (its ``beat_schedule`` key).
        interval: Seconds between ticks, or 0.0 for a crontab entry.
        crontab: The cron expression, or "" for an interval entry.
        spec: What each run submits (its task id is replaced by one per tick).
        expires: Seconds after its tick when a run may no longer start, or None.
        timezone: The IANA zone the crontab is read in; "" for UTC (and interval entries).
    """

    name: str
    interval: float
    crontab: str
    spec: SubmitSpec
    expires: float | None
    timezone: str = ""


def entry_from(app: Celeriac, name: str, entry: Mapping[str, Any]) -> PeriodicEntry:
    """Resolve one ``beat_schedule`` entry of ``app``.

    Raises:
        InvalidTaskSpec: The entry is malformed; the message names it and what is wrong.
    """
    try:
        return _resolve(app, name, entry)
    except InvalidTaskSpec as error:
        raise InvalidTaskSpec(f"periodic task {name!r}: {error}") from None


def entries_of(app: Celeriac) -> list[PeriodicEntry]:
    """Every periodic entry ``app`` declares (``on_after_configure`` receivers run first).

    Raises:
        InvalidTaskSpec: An entry is malformed.
    """
    app.configure()
    return [entry_from(app, name, entry) for name, entry in app.config.beat_schedule.items()]


def _resolve(app: Celeriac, name: str, entry: Mapping[str, Any]) -> PeriodicEntry:
    if not isinstance(name, str) or not name:
        raise InvalidTaskSpec("an entry needs a non-empty name")
    if not isinstance(entry, Mapping):
        raise InvalidTaskSpec(f"an entry is a mapping with 'task' and 'schedule', got {entry!r}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise InvalidTaskSpec(f"unknown key(s) {', '.join(unknown)}; known: task, schedule, ...")
    task_name = entry.get("task")
    if not isinstance(task_name, str) or not task_name:
        raise InvalidTaskSpec("'task' must be a task name")
    interval, cron = _schedule(entry.get("schedule"))
    options = dict(entry.get("options") or {})
    fixed = [key for key in _FROM_THE_TICK if options.get(key) is not None]
    if fixed:
        raise InvalidTaskSpec(f"option(s) {', '.join(fixed)} come from each tick, not the entry")
    task = app.tasks.get(task_name)
    expires = options.pop("expires", None)
    if expires is None and task is not None:
        expires = task.options.expires
    if expires is not None and not (
        isinstance(expires, int | float | timedelta) and _positive(expires)
    ):
        raise InvalidTaskSpec(f"'expires' must be positive seconds from the tick, got {expires!r}")
    args, kwargs = entry.get("args") or (), entry.get("kwargs") or {}
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        raise InvalidTaskSpec("'args' must be a list or tuple and 'kwargs' a mapping")
    spec = build_spec(
        task_name,
        args,
        kwargs,
        CallOptions.parse(options),
        task=task.options if task is not None else None,
        config=app.config,
    )
    # Each run's expiry counts from its tick: the broker sets it.
    spec = dataclasses.replace(spec, options=dataclasses.replace(spec.options, expires=None))
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else expires
    zone = crontab_zone(app.config.timezone, app.config.enable_utc) if cron else ""
    return PeriodicEntry(
        name, interval, cron, spec, None if seconds is None else float(seconds), zone
    )


def crontab_zone(timezone: str, enable_utc: bool) -> str:
    """The zone crontabs are read in, as Celery picks it; "" means UTC.

    Raises:
        InvalidTaskSpec: ``enable_utc`` is off, no ``timezone`` is set, and this machine's zone
            has no IANA name to send (the broker may run in another zone).
    """
    if timezone or enable_utc:
        return "" if timezone == "UTC" else timezone
    local = _local_zone_name()
    if local is None:
        raise InvalidTaskSpec(
            "enable_utc is off and this machine's time zone has no IANA name (TZ or "
            "/etc/localtime): set app.conf.timezone, e.g. 'Europe/Paris'"
        )
    return "" if local == "UTC" else local


def _local_zone_name() -> str | None:
    """This machine's zone as an IANA name: ``TZ``, else where /etc/localtime points."""
    candidates = [os.environ.get("TZ", "").removeprefix(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "/zoneinfo/" in target:
            candidates.append(target.split("/zoneinfo/", 1)[1])
    for name in candidates:
        if name and is_time_zone(name, None) is None:
            return name
    return None


def _schedule(value: object) -> tuple[float, str]:
    if isinstance(value, crontab):
        return 0.0, value.expression
    if isinstance(value, schedule):
        return value.seconds, ""
    return interval_seconds(value), ""


def _positive(value: float | timedelta) -> bool:
    return (value.total_seconds() if isinstance(value, timedelta) else value) > 0
