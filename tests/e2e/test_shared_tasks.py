"""A Celery-shaped project in a real worker: autodiscovered packages of shared tasks."""

from __future__ import annotations

import os

from tests.e2e.project.celery import app as project_app
from tests.support import BrokerProcess, WorkerProcess


def test_the_worker_runs_the_shared_tasks_its_app_autodiscovered(
    broker_process: BrokerProcess,
) -> None:
    assert "tests.e2e.project.reports.tasks.summarize" in project_app.tasks
    project_app.conf.broker = broker_process.address
    try:
        with WorkerProcess(broker_process.address, "tests.e2e.project.celery", "--pool", "solo"):
            task = project_app.tasks["tests.e2e.project.reports.tasks.summarize"]
            answer = task.delay([1, 2, 3]).get(timeout=20)
    finally:
        project_app.close()
    assert answer["total"] == 6 and answer["pid"] != os.getpid()
