"""The one logging set-up of every Celeriac program: the broker, the worker and its pool children.

Every line has a timestamp. ``text`` lines read ``2026-12-03 07:01:02,345 INFO name: message``;
``json`` lines are one object each, for log shippers: ``time`` (ISO 8601, UTC, milliseconds),
``level``, ``logger``, ``message``, ``pid``, ``task_id`` and ``task_name`` when the line is
about a task, and ``exception`` with the traceback when there is one. With a log file the lines
are appended to it instead of going to stderr; a worker's children append to the same file.

A worker also turns what tasks ``print()`` (or write to ``sys.stdout`` / ``sys.stderr``) into
log lines, as Celery's ``worker_redirect_stdouts`` does: one WARNING record per line from the
logger ``celeriac.redirected``, so it is stamped, carries the task's id and goes to the log file.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO, cast

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a log record may carry (logging's ``extra=``) that a JSON line includes.
TASK_FIELDS = ("task_id", "task_name")
# The logger of lines written to a redirected stdout or stderr, and their level (Celery's
# ``worker_redirect_stdouts_level`` is WARNING too).
REDIRECTED_LOGGER = "celeriac.redirected"
REDIRECTED_LEVEL = logging.WARNING


@dataclass(frozen=True)
class LogSettings:
    """How a process logs: its level, where its lines go and in which format.

    Attributes:
        level: A level name (``info``, ``DEBUG`` ...).
        logfile: A path to append lines to; empty means stderr.
        format: ``text`` or ``json``.
        redirect_output: Log what is written to ``sys.stdout`` and ``sys.stderr`` (a worker's
            tasks' prints; see the module docstring).
    """

    level: str = "info"
    logfile: str = ""
    format: str = "text"
    redirect_output: bool = False


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
        handler = logging.StreamHandler(_original(sys.stderr))
    handler.setFormatter(JsonFormatter() if settings.format == "json" else _text_formatter())
    for log_filter in filters:
        handler.addFilter(log_filter)
    logging.basicConfig(level=settings.level.upper(), handlers=[handler], force=True)
    # Python's warnings become log lines too (logger "py.warnings"), stamped and formatted
    # like the rest, as Celery does.
    logging.captureWarnings(True)
    if settings.redirect_output:
        # The handler above keeps the real stderr: it was given the stream before this.
        redirected = logging.getLogger(REDIRECTED_LOGGER)
        sys.stdout = cast(TextIO, LoggingStream(redirected, _original(sys.stdout)))
        sys.stderr = cast(TextIO, LoggingStream(redirected, _original(sys.stderr)))


def _original(stream: TextIO) -> TextIO:
    """The real stream behind ``stream`` (configuring twice must not stack stand-ins)."""
    return stream.original if isinstance(stream, LoggingStream) else stream


class LoggingStream(io.TextIOBase):
    """A stand-in for ``sys.stdout`` or ``sys.stderr`` that logs each line written to it.

    A line is logged once its newline arrives (or at ``flush()``); blank lines are dropped.
    Whatever logging itself writes to the stream while handling a record (its own error
    reports) goes to the original stream, so a failing handler cannot loop.
    """

    def __init__(self, logger: logging.Logger, original: TextIO) -> None:
        super().__init__()
        self._logger = logger
        self._original = original
        self._partial = ""
        self._lock = threading.RLock()
        self._inside = threading.local()

    @property
    def original(self) -> TextIO:
        """The stream this one stands in for."""
        return self._original

    def writable(self) -> bool:
        """Always: this stream takes text."""
        return True

    def isatty(self) -> bool:
        """Never: what reads this is the log, not a terminal."""
        return False

    def write(self, text: str) -> int:
        """Log every line ``text`` completes; keep the rest for the next write."""
        if getattr(self._inside, "logging", False):
            return self._original.write(text)
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            self._log(lines)
        return len(text)

    def flush(self) -> None:
        """Log the line begun so far, if any."""
        with self._lock:
            partial, self._partial = self._partial, ""
            self._log([partial])

    def _log(self, lines: list[str]) -> None:
        self._inside.logging = True
        try:
            for line in lines:
                if line.strip():
                    self._logger.log(REDIRECTED_LEVEL, "%s", line.rstrip())
        finally:
            self._inside.logging = False


def _text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT)


def _utc_time(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
