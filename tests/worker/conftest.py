"""Fixtures shared by the worker tests: an in-process broker and a client app bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.testing import RunningBroker, running_broker
from client import Celeriac
from tests.worker import tasks_unit


@pytest.fixture
def broker() -> Iterator[RunningBroker]:
    """An in-process broker on a free port."""
    with running_broker() as running:
        yield running


@pytest.fixture
def app(broker: RunningBroker) -> Iterator[Celeriac]:
    """A client app on `broker` that knows the unit-test tasks."""
    client = Celeriac("worker-tests", broker=broker.address)
    client.tasks.update(tasks_unit.app.tasks)
    yield client
    client.close()
