"""Schedules of periodic tasks, with Celery's names: ``crontab(...)`` and ``schedule(...)``.

``from client.schedules import crontab`` where Celery code has ``from celery.schedules import
crontab``. A schedule is only a description: the broker keeps the time and runs each entry
once per tick (see :mod:`client.periodic`). Crontab times are read in the app's time zone
(``app.conf.timezone``; UTC by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from croniter import croniter

from client.errors import InvalidTaskSpec

CronField = str | int | Iterable[int]


class crontab:
    """A cron schedule with Celery's signature, in the app's time zone (UTC by default).

    ``crontab(minute=0, hour="*/3")``, ``crontab(minute=30, hour=7, day_of_week="mon-fri")``;
    each field takes what cron takes ("*", "*/15", "1-5", "mon,wed"), an int, or ints.

    Raises:
        InvalidTaskSpec: A field is not valid cron (checked when the schedule is made).
    """

    def __init__(
        self,
        minute: CronField = "*",
        hour: CronField = "*",
        day_of_week: CronField = "*",
        day_of_month: CronField = "*",
        month_of_year: CronField = "*",
        **celery: object,
    ) -> None:
        unsupported = sorted(set(celery) - {"app"})
        if unsupported:
            raise InvalidTaskSpec(
                f"crontab option(s) {', '.join(unsupported)} not supported: the broker keeps "
                "the time, in the app's timezone setting"
            )
        fields = (minute, hour, day_of_month, month_of_year, day_of_week)
        self.expression = " ".join(_field(value) for value in fields)
        if not croniter.is_valid(self.expression) or len(self.expression.split()) != 5:
            raise InvalidTaskSpec(
                f"crontab(minute={minute!r}, hour={hour!r}, day_of_week={day_of_week!r}, "
                f"day_of_month={day_of_month!r}, month_of_year={month_of_year!r}) is not a "
                "valid cron schedule"
            )

    def __repr__(self) -> str:
        return f"<crontab: {self.expression} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.expression == self.expression

    def __hash__(self) -> int:
        return hash(self.expression)


class schedule:
    """Every ``run_every`` (seconds or a timedelta), as Celery's ``schedule(run_every=...)``."""

    def __init__(self, run_every: float | timedelta) -> None:
        self.seconds = interval_seconds(run_every)

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g}s>"


def interval_seconds(every: object) -> float:
    """Seconds of an interval given as a number or a timedelta.

    Raises:
        InvalidTaskSpec: It is neither, or not positive.
    """
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise InvalidTaskSpec(
            f"a periodic schedule is seconds, a timedelta, schedule(...) or crontab(...), "
            f"got {every!r}"
        )
    if not seconds > 0:
        raise InvalidTaskSpec(f"a periodic interval must be positive, got {every!r}")
    return seconds


def _field(value: CronField) -> str:
    if isinstance(value, str):
        return value.replace(" ", "") or "*"
    if isinstance(value, int):
        return str(value)
    return ",".join(str(int(item)) for item in value)
