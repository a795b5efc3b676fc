"""The worker's Celery-like per-task log lines, at INFO, and none of them above INFO."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from client import Celeriac
from tests.e2e import tasks
from tests.support import WorkerProcess


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
    worker.wait_for_line(r"ERROR .*raised unexpected: .*boom")
    assert "received" not in worker.output and "succeeded" not in worker.output
    assert "] failed" not in worker.output
