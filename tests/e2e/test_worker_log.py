"""The worker's Celery-like per-task log lines, at INFO, and none of them above INFO."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from client import Celeriac
from tests.e2e import tasks
from tests.support import LISTENING, LoggedProcess, WorkerProcess, wait_until

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def test_info_lines_say_received_succeeded_with_runtime_and_result_and_failed(
    app: Celeriac, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    done = tasks.add.delay(2, 3)
    assert done.get(timeout=20) == 5
    failed = tasks.fail.delay("boom")
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=20)
    name = re.escape("tests.e2e.tasks.add")
    worker.wait_for_line(rf"INFO .*Task {name}\[{done.id}\] received")
    worker.wait_for_line(rf"INFO .*Task {name}\[{done.id}\] succeeded in \d+\.\d{{3}}s: 5$")
    worker.wait_for_line(
        rf"INFO .*Task tests\.e2e\.tasks\.fail\[{failed.id}\] failed in \d+\.\d{{3}}s: .*boom"
    )


def test_above_info_no_task_line_is_logged(
    app: Celeriac, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("--loglevel", "warning", wait_ready=False)
    assert tasks.add.delay(2, 3).get(timeout=30) == 5
    failed = tasks.fail.delay("boom")
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=20)
    # The unexpected error's own ERROR line (worker.execution) comes before the outcome is sent.
    # It comes from the pool child, which stamps its lines with the time as the worker does.
    worker.wait_for_line(rf"^{TIMESTAMP} ERROR .*raised unexpected: .*boom")
    assert "received" not in worker.output and "succeeded" not in worker.output
    assert "] failed" not in worker.output


def json_lines(path: Path) -> list[dict[str, object]]:
    """Every complete line of a JSON log file, parsed (a torn last line is not yet complete)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def logged(path: Path, pattern: str) -> dict[str, object]:
    """Wait for the JSON line of ``path`` whose message matches ``pattern``, and return it."""
    found: list[dict[str, object]] = []

    def seen() -> bool:
        found[:] = [x for x in json_lines(path) if re.search(pattern, str(x["message"]))]
        return bool(found)

    wait_until(seen, 30, f"no JSON line matching {pattern!r} in {path}")
    return found[0]


def test_json_lines_of_a_tasks_life_from_the_worker_and_its_child_go_to_the_logfile(
    app: Celeriac, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    logfile = tmp_path / "worker.log"
    worker = start_worker(
        "--concurrency", "1", "--log-format", "json", "--logfile", str(logfile), wait_ready=False
    )
    logged(logfile, "worker ready")
    failed = tasks.fail.delay("boom")
    with pytest.raises(Exception, match="boom"):
        failed.get(timeout=20)
    name = "tests.e2e.tasks.fail"
    received = logged(logfile, rf"Task {re.escape(name)}\[{failed.id}\] received")
    raised = logged(logfile, "raised unexpected: .*boom")  # logged by the pool child
    outcome = logged(logfile, rf"\[{failed.id}\] failed in")
    for line in (received, raised, outcome):
        assert line["task_id"] == failed.id and line["task_name"] == name
        assert set(line) >= {"time", "level", "logger", "message", "pid"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))
    assert received["pid"] == outcome["pid"] == worker.process.pid != raised["pid"]
    assert raised["level"] == "ERROR" and "Traceback" in str(raised["exception"])
    assert all(
        line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"} for line in json_lines(logfile)
    )
    assert "worker ready" not in worker.output  # the lines went to the file, not to stderr


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_what_a_task_prints_is_logged_with_its_task_in_the_logfile(
    app: Celeriac, start_worker: Callable[..., WorkerProcess], tmp_path: Path, pool: str
) -> None:
    logfile = tmp_path / "worker.log"
    args = ["--pool", pool, "--concurrency", "1", "--log-format", "json", "--logfile"]
    worker = start_worker(*args, str(logfile), wait_ready=False)
    said = tasks.chatty.delay("hello")
    assert said.get(timeout=20) == "hello"
    lines = [logged(logfile, r"^said: hello$"), logged(logfile, r"^noted: hello$")]
    lines.append(logged(logfile, r"^second line$"))
    for line in lines:
        assert line["logger"] == "celeriac.redirected" and line["level"] == "WARNING", line
        assert line["task_id"] == said.id, line
    assert "hello" not in worker.output  # nothing went to the terminal


def test_with_no_redirect_stdouts_prints_stay_on_the_terminal(
    app: Celeriac, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("--concurrency", "1", "--no-redirect-stdouts")
    assert tasks.chatty.delay("plain").get(timeout=20) == "plain"
    worker.wait_for_line(r"^said: plain$")
    worker.wait_for_line(r"^noted: plain$")


def test_the_broker_writes_json_lines_to_its_logfile(tmp_path: Path) -> None:
    logfile = tmp_path / "broker.log"
    args = ["-m", "broker", "serve", "--port", "0", "--memory-only"]
    with LoggedProcess([*args, "--log-format", "json", "--logfile", str(logfile)]) as broker:
        listening = logged(logfile, LISTENING.pattern)
        assert listening["logger"] == "broker.service.server" and listening["level"] == "INFO"
        assert broker.output == ""
    refused = LoggedProcess([*args, "--logfile", str(tmp_path / "no-such-dir" / "broker.log")])
    assert refused.wait() == 2
    assert refused.output.startswith("error: cannot open the log file:")
    assert len(refused.lines) == 1
