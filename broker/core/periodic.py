"""Periodic tasks held by the broker: Celery's beat, without a beat process.

An entry (:class:`PeriodicSpec`) names a schedule, an interval in seconds or a five-field cron
expression read in an IANA time zone (UTC unless the entry names one: the app's Celery
``timezone`` setting), and the task to submit at each tick. Daylight-saving changes are
croniter's: a wall time the clocks jump over runs at the jump, and one that happens twice (the
hour repeated in autumn) runs at both. Workers declare the entries of their
apps in their session hello and an entry is upserted by name: the same definition changes
nothing, a changed one replaces the old. Only an operator removes one (``python -m broker
periodic remove NAME``), since a worker that does not declare an entry may simply be older or
run other code.

Exactly one run per tick:

* each run's task id is derived from the entry's name and its tick (a UUID5), so even a
  resubmitted tick is the same task, deduplicated by the broker;
* the entry's progress (``done_until``: every tick at or before it is done) is journaled in the
  same batch as the run's task, so a restart neither repeats nor forgets a tick.

Several brokers sharing a database (``--shared``) keep every entry, but only one of them, the
*leader*, arms the timers (:meth:`Periodic.lead`; the others :meth:`Periodic.follow`): the
others take declarations and keep their copies current (:meth:`Periodic.sync`), and the broker
that takes the lead next starts from the stored progress of the last (broker.cluster).

Missed ticks (the broker was down across several, or its loop stalled longer than an interval):
ONE catch-up run, for the most recent missed tick, as soon as the broker is back; the older ones
are skipped and counted in a WARNING and in the run's ``celeriac-periodic-missed`` header
(Celery's beat also runs an overdue entry once). A run's ``expires`` counts from its tick, not
from when it was sent, so an entry with ``expires`` never runs a catch-up staler than that: it
ends REVOKED (expired) instead.

A run the broker refuses for a passing reason (a limit such as ``max_queued`` is reached) is
not dropped: the tick stays owed and is tried again every ``RETRY_REFUSED`` seconds, as a
catch-up once later ticks are due too. A run refused for good (its template no longer passes
the broker's checks) counts as done, with a WARNING, so one bad entry cannot spin.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from broker.clock import Clock
from broker.core.model import SubmitResult, TaskSpec
from broker.core.timers import Timer, TimerHeap
from broker.errors import BrokerError, InvalidArgument, LimitExceeded

logger = logging.getLogger(__name__)

# Headers every periodic run carries (the worker sees them in self.request.headers).
ENTRY_HEADER = "celeriac-periodic"
TICK_HEADER = "celeriac-periodic-tick"
MISSED_HEADER = "celeriac-periodic-missed"
MIN_INTERVAL = 0.01
# Seconds before a run refused for a passing reason (a full broker) is tried again.
RETRY_REFUSED = 1.0
# Missed cron ticks are counted one by one up to this many (a year of minutes is 525,600).
_MAX_COUNTED = 100_000
_RUN_IDS = uuid.UUID("5b0b7c1e-6d4f-4f8e-9a51-63e1a1e0b7c3")


@dataclass(frozen=True, slots=True)
class PeriodicSpec:
    """One periodic entry as declared (``PeriodicTask`` in tasks.proto).

    Attributes:
        name: Unique name (Celery's ``beat_schedule`` key).
        template: What each run submits; its task id, eta, expires and idempotency key are empty.
        interval: Seconds between ticks, or 0 for a cron entry.
        crontab: A five-field cron expression, or "" for an interval entry.
        expires_ms: Each run expires this long after its tick; 0 means never.
        timezone: The IANA zone the crontab is read in; "" means UTC.
    """

    name: str
    template: TaskSpec
    interval: float = 0.0
    crontab: str = ""
    expires_ms: int = 0
    timezone: str = ""

    def check(self) -> None:
        """Raise InvalidArgument naming what is wrong with the schedule or template."""
        where = f"periodic task {self.name[:140]!r}"
        if bool(self.interval) == bool(self.crontab):
            raise InvalidArgument(f"{where}: give exactly one of interval_seconds and crontab")
        if self.interval and not (math.isfinite(self.interval) and self.interval >= MIN_INTERVAL):
            raise InvalidArgument(
                f"{where}: interval_seconds must be at least {MIN_INTERVAL}, got {self.interval}"
            )
        if self.crontab and not _valid_cron(self.crontab):
            raise InvalidArgument(
                f"{where}: {self.crontab!r} is not a five-field cron expression "
                "(minute hour day-of-month month day-of-week)"
            )
        if self.timezone:
            if not self.crontab:
                raise InvalidArgument(f"{where}: a timezone applies to a crontab only")
            if _zone(self.timezone) is None:
                raise InvalidArgument(
                    f"{where}: unknown time zone {self.timezone[:100]!r} (an IANA name such as "
                    "'Europe/Paris' is expected)"
                )
        template = self.template
        fixed = {
            "task_id": template.task_id,
            "eta": template.eta,
            "expires": template.expires,
            "idempotency_key": template.idempotency_key,
        }
        given = [name for name, value in fixed.items() if value]
        if given:
            raise InvalidArgument(
                f"{where}: the task template may not set {', '.join(given)} (each run gets its "
                "own id from the tick; use expires_ms for an expiry relative to the tick)"
            )

    def next_after(self, moment: float, anchor: float) -> float:
        """The first tick strictly after wall time ``moment``."""
        if self.interval:
            return anchor + self._index_after(moment, anchor) * self.interval
        return float(self._cron_after(moment).get_next(float))

    def ticks_between(self, after: float, until: float, anchor: float) -> tuple[float | None, int]:
        """The latest tick in ``(after, until]`` and how many ticks that interval holds."""
        if self.interval:
            first = self._index_after(after, anchor)
            last = self._index_after(until, anchor) - 1
            if last < first:
                return None, 0
            return anchor + last * self.interval, last - first + 1
        iterator = self._cron_after(after)
        latest, count = None, 0
        while count < _MAX_COUNTED:
            tick = float(iterator.get_next(float))
            if tick > until:
                break
            latest, count = tick, count + 1
        return latest, count

    def _cron_after(self, moment: float) -> croniter:
        """The crontab's ticks after wall time ``moment``, read in the entry's zone."""
        zone = _zone(self.timezone) if self.timezone else UTC
        return croniter(self.crontab, datetime.fromtimestamp(moment, zone or UTC))

    def _index_after(self, moment: float, anchor: float) -> int:
        """The smallest k whose tick ``anchor + k * interval`` is after ``moment``.

        A tick's value is only ever computed by that one expression, so a tick recorded as
        done compares equal to itself when recomputed: float rounding in a division must not
        make one tick two (they would get two run ids).
        """
        index = max(0, math.floor((moment - anchor) / self.interval))
        while anchor + index * self.interval <= moment:
            index += 1
        while index > 0 and anchor + (index - 1) * self.interval > moment:
            index -= 1
        return index


class PeriodicEntry:
    """An entry and where it is in its schedule."""

    __slots__ = ("anchor", "done_until", "last_run", "spec", "timer")

    def __init__(
        self, spec: PeriodicSpec, anchor: float, done_until: float, last_run: float | None
    ) -> None:
        self.spec = spec
        # Interval ticks fall at anchor + k * interval (the time the entry was first declared).
        self.anchor = anchor
        # Every tick at or before this wall time is done (run, or skipped by the policy).
        self.done_until = done_until
        self.last_run = last_run
        self.timer: Timer | None = None

    @property
    def next_tick(self) -> float:
        """Wall time of the next tick to run."""
        return self.spec.next_after(self.done_until, self.anchor)


def run_id(name: str, tick: float) -> str:
    """The task id of the run of entry ``name`` at ``tick``: the same for the same tick."""
    return str(uuid.uuid5(_RUN_IDS, f"{name}\0{tick!r}"))


class Periodic:
    """Every periodic entry of one broker, each armed in the timer heap at its next tick.

    Args:
        clock: The broker's clock.
        timers: The broker's timer heap.
        submit: Submits one run (the broker's own submit, with its checks and limits).
        note: Records an entry's new state, or None once removed (the journal's hook).
    """

    def __init__(
        self,
        clock: Clock,
        timers: TimerHeap,
        submit: Callable[[TaskSpec], SubmitResult],
        note: Callable[[str, PeriodicEntry | None], None],
    ) -> None:
        self._clock = clock
        self._timers = timers
        self._submit = submit
        self._note = note
        self.entries: dict[str, PeriodicEntry] = {}
        # Whether this broker runs the ticks (False on a broker following another's lead).
        self.leading = True

    def upsert(self, spec: PeriodicSpec) -> None:
        """Declare an entry: new, changed (replaced) or the same (nothing changes)."""
        existing = self.entries.get(spec.name)
        if existing is not None and existing.spec == spec:
            return
        now = self._clock.time()
        if existing is not None and _same_schedule(existing.spec, spec):
            existing.spec = spec  # only what runs changed: the schedule keeps its place
            self._note(spec.name, existing)
            logger.info("periodic task updated name=%s", spec.name)
            return
        if existing is not None:
            self._disarm(existing)
        # A new or rescheduled entry starts now: ticks before it were never owed.
        entry = PeriodicEntry(spec, now, now, existing.last_run if existing else None)
        self.entries[spec.name] = entry
        self._note(spec.name, entry)
        self._arm(entry)
        logger.info(
            "periodic task %s name=%s task=%s next=%s",
            "rescheduled" if existing else "added",
            spec.name,
            spec.template.name,
            _shown(entry.next_tick),
        )

    def remove(self, name: str) -> bool:
        """Drop an entry; True if there was one."""
        entry = self.entries.pop(name, None)
        if entry is None:
            return False
        self._disarm(entry)
        self._note(name, None)
        logger.info("periodic task removed name=%s", name)
        return True

    def restore(self, entry: PeriodicEntry) -> None:
        """Take an entry back from the journal; a tick missed meanwhile is due at once."""
        existing = self.entries.get(entry.spec.name)
        if existing is not None:
            self._disarm(existing)
        self.entries[entry.spec.name] = entry
        self._arm(entry)

    def follow(self) -> None:
        """Stop running ticks: another broker sharing the database runs them."""
        self.leading = False
        for entry in self.entries.values():
            self._disarm(entry)

    def lead(self, stored: list[PeriodicEntry]) -> None:
        """Run the ticks from now on, carrying on from the entries as last ``stored``.

        The stored progress is the last leader's (journaled with each run), so a tick it ran
        is not run again; entries declared here and not stored yet keep their own.
        """
        self.leading = True
        for entry in stored:
            self.restore(entry)
        for entry in self.entries.values():
            if entry.timer is None:
                self._arm(entry)

    def sync(self, name: str, stored: PeriodicEntry | None) -> None:
        """Take in entry ``name`` as another broker stored it (None: it was removed).

        A follower keeps the stored copy as it is. The leader keeps its own progress and
        takes only what changed: a new entry, a new definition (as a declaration here would),
        or a removal.
        """
        existing = self.entries.get(name)
        if stored is None:
            if existing is not None:
                self._disarm(existing)
                del self.entries[name]
                logger.info("periodic task removed name=%s (on another broker)", name)
        elif not self.leading or existing is None:
            self.restore(stored)
        elif existing.spec != stored.spec:
            self.upsert(stored.spec)

    # -- internals ---------------------------------------------------------------------------

    def _arm(self, entry: PeriodicEntry) -> None:
        if not self.leading:
            return
        clock = self._clock
        due = clock.monotonic() + (entry.next_tick - clock.time())
        entry.timer = self._timers.schedule(due, lambda: self._due(entry))

    def _disarm(self, entry: PeriodicEntry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def _due(self, entry: PeriodicEntry) -> None:
        entry.timer = None
        if self.entries.get(entry.spec.name) is not entry:
            return
        now = self._clock.time()
        tick, count = entry.spec.ticks_between(entry.done_until, now, entry.anchor)
        if tick is not None:
            if not self._run(entry, tick, count - 1):
                # Still owed: the next try sends the latest tick due by then.
                entry.timer = self._timers.schedule(
                    self._clock.monotonic() + RETRY_REFUSED, lambda: self._due(entry)
                )
                return
            entry.done_until = entry.last_run = tick
            self._note(entry.spec.name, entry)
        self._arm(entry)

    def _run(self, entry: PeriodicEntry, tick: float, missed: int) -> bool:
        """Submit the run of ``tick``; False when it was refused for now and is still owed."""
        spec = entry.spec
        headers = {**spec.template.headers, ENTRY_HEADER: spec.name, TICK_HEADER: _shown(tick)}
        if missed:
            headers[MISSED_HEADER] = str(missed)
        run = dataclasses.replace(
            spec.template,
            task_id=run_id(spec.name, tick),
            headers=headers,
            expires=tick + spec.expires_ms / 1000 if spec.expires_ms else None,
        )
        try:
            submitted = self._submit(run)
        except LimitExceeded as error:
            logger.warning(
                "periodic task %s could not send its %s run yet (retrying in %g s): %s",
                spec.name,
                _shown(tick),
                RETRY_REFUSED,
                error,
            )
            return False
        except BrokerError as error:
            logger.warning(
                "periodic task %s skipped its %s run: %s", spec.name, _shown(tick), error
            )
            return True
        if missed:
            logger.warning(
                "periodic task %s missed %d tick(s) (the broker was down, or too busy to keep "
                "time): running the latest (%s) once",
                spec.name,
                missed,
                _shown(tick),
            )
        logger.info(
            "periodic task sent name=%s id=%s tick=%s", spec.name, submitted.task_id, _shown(tick)
        )
        return True


def _same_schedule(old: PeriodicSpec, new: PeriodicSpec) -> bool:
    return (old.interval, old.crontab, old.timezone) == (new.interval, new.crontab, new.timezone)


@functools.lru_cache(maxsize=256)  # bounded: the names come from the wire
def _zone(name: str) -> tzinfo | None:
    """The IANA zone of that name, or None when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _valid_cron(expression: str) -> bool:
    return len(expression.split()) == 5 and croniter.is_valid(expression)


def _shown(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
