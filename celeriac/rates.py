"""Celery's rate-limit forms, parsed in one place for the client, the worker and the broker.

``"10/s"``, ``"10/m"``, ``"10/h"``, or a plain number (per second), as in Celery. ``None``,
``""``, ``0`` and ``"0/m"`` mean no limit (Celery's too).
"""

from __future__ import annotations

import math

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


class InvalidRate(ValueError):
    """A rate limit that is not one of Celery's forms."""


def parse_rate(rate: object) -> float:
    """Tasks per second allowed by ``rate``; 0.0 means no limit.

    Raises:
        InvalidRate: ``rate`` is not a number or ``"N/s"``, ``"N/m"``, ``"N/h"``.
    """
    if rate is None:
        return 0.0
    if isinstance(rate, bool):
        raise InvalidRate(f"rate limit must be a number or 'N/s', 'N/m', 'N/h', got {rate!r}")
    if isinstance(rate, int | float):
        count, unit = float(rate), "s"
    elif isinstance(rate, str):
        text = rate.strip()
        if not text:
            return 0.0
        number, _, unit = text.partition("/")
        unit = unit.strip() or "s"
        try:
            count = float(number)
        except ValueError:
            count = math.nan
    else:
        raise InvalidRate(f"rate limit must be a number or 'N/s', 'N/m', 'N/h', got {rate!r}")
    if unit not in _PER or not math.isfinite(count) or count < 0:
        raise InvalidRate(
            f"rate limit {rate!r} is not 'N/s', 'N/m', 'N/h' or a plain number per second (N >= 0)"
        )
    return count / _PER[unit]


def rate_text(rate: str | float | None) -> str:
    """``rate`` as sent on the wire (``Hello.rate_limits``): the user's text, "" for none."""
    if rate is None:
        return ""
    return rate if isinstance(rate, str) else repr(rate)
