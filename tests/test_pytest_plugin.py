"""The pytest fixtures users get (celeriac.pytest_plugin, loaded through its entry point)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.testing import RunningBroker
from client import Celeriac, Task
from client.errors import TaskRevokedError
from worker.testing import RunningWorker

app = Celeriac("plugin-users-app", broker="127.0.0.1:1")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def where(self: Task) -> str:
    return self.request.queue


@pytest.fixture
def celeriac_app() -> Celeriac:
    return app


@pytest.fixture
def celeriac_worker_options() -> dict[str, Any]:
    return {"queues": ("default", "fast")}


def test_the_worker_fixture_runs_the_apps_tasks_through_a_real_broker(
    celeriac_worker: RunningWorker, celeriac_broker: RunningBroker
) -> None:
    assert app.conf.broker == celeriac_broker.address
    assert add.delay(2, 3).get(timeout=20) == 5
    assert where.apply_async(queue="fast").get(timeout=20) == "fast"
    revoked = add.apply_async((1, 1), countdown=60)
    revoked.revoke()
    with pytest.raises(TaskRevokedError):
        revoked.get(timeout=20)
    assert celeriac_broker.call(lambda core: core.get(revoked.id)) is not None


def test_the_app_gets_its_own_broker_address_back_afterwards() -> None:
    assert app.conf.broker == "127.0.0.1:1"
