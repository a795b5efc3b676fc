"""The one logging set-up of every Celeriac program: the broker, the worker and its pool children.

Every line has a timestamp. ``text`` lines read ``2026-12-03 07:01:02,345 INFO name: message``;
``json`` lines are one object each, for log shippers: ``time`` (ISO 8601, UTC, milliseconds),
``level``, ``logger``, ``message``, ``pid``, ``task_id`` and ``task_name`` when the line is
about a task, and ``exception`` with the traceback when there is one. With a log file the lines
are appended to it instead of going to stderr; a worker's children append to the same file.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a log record may carry (logging's ``extra=``) that a JSON line includes.
TASK_FIELDS = ("task_id", "task_name")


@dataclass(frozen=True)
class LogSettings:
    """How a process logs: its level, where its lines go and in which format.

    Attributes:
        level: A level name (``info``, ``DEBUG`` ...).
        logfile: A path to append lines to; empty means stderr.
        format: ``text`` or ``json``.
    """

    level: str = "info"
    logfile: str = ""
    format: str = "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object: time, level, logger, message, pid, task, exception."""
        line: dict[str, object] = {
            "time": _utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for field in TASK_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(settings: LogSettings, filters: Iterable[logging.Filter] = ()) -> None:
    """Send the root logger's records to stderr or ``settings.logfile``, in its format.

    Replaces any handler set before (a process configures its logging once, at start).

    Args:
        settings: Level, destination and format.
        filters: Filters on the handler, e.g. one adding the current task's id to records.

    Raises:
        OSError: The log file cannot be opened for appending.
    """
    handler: logging.Handler
    if settings.logfile:
        handler = logging.FileHandler(settings.logfile, mode="a", encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else _text_formatter())
    for log_filter in filters:
        handler.addFilter(log_filter)
    logging.basicConfig(level=settings.level.upper(), handlers=[handler], force=True)
    # Python's warnings become log lines too (logger "py.warnings"), stamped and formatted
    # like the rest, as Celery does.
    logging.captureWarnings(True)


def _text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT)


def _utc_time(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
