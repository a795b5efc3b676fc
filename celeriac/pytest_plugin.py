"""pytest fixtures for testing your tasks against a real broker and worker, like Celery's.

Installed with Celeriac (a ``pytest11`` entry point), so in your project's tests::

    import pytest
    from myproj.tasks import app, add

    @pytest.fixture
    def celeriac_app():
        return app

    def test_add(celeriac_worker):
        assert add.delay(2, 2).get(timeout=10) == 4

``celeriac_broker`` is an in-process broker on a free loopback port (memory-only, so nothing is
left on disk); ``celeriac_worker`` points your app at it for the test and runs its tasks in a
thread-pool worker in the same process, over the real gRPC path (tasks, retries, results and
errors behave as in production; time limits that kill a process need ``python -m worker``).
For tests that need no broker at all, see eager mode (``task.apply()``, ``task_always_eager``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from broker.testing import RunningBroker
    from client.app import Celeriac
    from worker.testing import RunningWorker


@pytest.fixture
def celeriac_broker() -> Iterator[RunningBroker]:
    """A real broker for this test: ``celeriac_broker.address`` is where it listens."""
    from broker.testing import running_broker

    with running_broker() as broker:
        yield broker


@pytest.fixture
def celeriac_app() -> Celeriac:
    """Your app: override this fixture to return it (``celeriac_worker`` runs its tasks)."""
    raise pytest.UsageError(
        "define a `celeriac_app` fixture that returns your Celeriac app to use celeriac_worker"
    )


@pytest.fixture
def celeriac_worker_options() -> dict[str, Any]:
    """Options for the worker (``queues=``, ``concurrency=``, ``pool=``); override to change."""
    return {}


@pytest.fixture
def celeriac_worker(
    celeriac_app: Celeriac,
    celeriac_broker: RunningBroker,
    celeriac_worker_options: dict[str, Any],
) -> Iterator[RunningWorker]:
    """A worker running ``celeriac_app``'s tasks, with the app pointed at ``celeriac_broker``."""
    from worker.testing import running_worker

    before = celeriac_app.config
    celeriac_app.conf.update(broker=celeriac_broker.address)
    try:
        with running_worker(celeriac_app, celeriac_broker.address, **celeriac_worker_options) as w:
            yield w
    finally:
        celeriac_app.config = before
