"""The one logging set-up: JSON lines, the log file, warnings as log lines."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac.logs import REDIRECTED_LOGGER, LoggingStream, LogSettings, configure


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines_go_to_the_file_one_object_each(tmp_path: Path) -> None:
    logfile = tmp_path / "out.log"
    configure(LogSettings(level="info", logfile=str(logfile), format="json"))
    log = logging.getLogger("celeriac.test")
    log.debug("not at info")
    log.info("two\nlines", extra={"task_id": "t-1", "task_name": "tasks.add"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("mind this", UserWarning, stacklevel=1)
    lines = [json.loads(line) for line in logfile.read_text().splitlines()]
    assert [line["message"] for line in lines[:2]] == ["two\nlines", "it failed"]
    assert lines[0]["task_id"] == "t-1" and lines[0]["task_name"] == "tasks.add"
    assert "task_id" not in lines[1] and "ValueError: boom" in lines[1]["exception"]
    assert lines[2]["logger"] == "py.warnings" and "mind this" in lines[2]["message"]
    assert len(lines) == 3 and all(line["time"].endswith("Z") for line in lines)


def test_text_lines_start_with_the_time(tmp_path: Path) -> None:
    logfile = tmp_path / "out.log"
    configure(LogSettings(level="warning", logfile=str(logfile)))
    logging.getLogger("celeriac.test").warning("careful")
    (line,) = logfile.read_text().splitlines()
    date, clock, level, rest = line.split(" ", 3)
    assert (
        len(date) == 10
        and len(clock) == 12
        and (level, rest) == ("WARNING", "celeriac.test: careful")
    )


class _Failing(logging.Handler):
    """A handler whose emit fails, so logging reports the error on sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            raise RuntimeError("the handler is broken")
        except RuntimeError:
            self.handleError(record)  # what logging's own handlers do


def test_a_logging_stream_logs_whole_lines_and_a_failing_handler_cannot_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = io.StringIO()
    stream = LoggingStream(logging.getLogger(REDIRECTED_LOGGER), original)
    with caplog.at_level(logging.WARNING, logger=REDIRECTED_LOGGER):
        stream.write("first ")
        assert caplog.messages == []  # no newline yet
        stream.write("line\n\n   \nsecond")
        assert caplog.messages == ["first line"]  # blank lines dropped
        stream.flush()
        assert caplog.messages == ["first line", "second"]
    broken = logging.getLogger("tests.broken")
    broken.propagate = False
    broken.addHandler(_Failing())
    looping = LoggingStream(broken, original)
    with contextlib.redirect_stderr(looping):  # logging's error report lands on this stream
        looping.write("boom\n")
    assert "the handler is broken" in original.getvalue()
