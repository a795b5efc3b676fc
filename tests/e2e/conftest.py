"""End-to-end fixtures: a client app bound to the broker process of the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client import Celeriac
from tests.e2e import tasks
from tests.support import BrokerProcess, WorkerProcess

# What a test may start and must stop at its end (see the cleanup fixture).
Started = BrokerProcess | WorkerProcess | Celeriac


@pytest.fixture
def app(broker_process: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celeriac]:
    """The e2e task module's app, pointed at this test's broker."""
    monkeypatch.setenv("CELERIAC_BROKER", broker_process.address)
    client_app = Celeriac("e2e-client", broker=broker_process.address, connect_timeout=5)
    # Share the task module's registry so `tasks.add.delay()` talks to this broker.
    tasks.app.conf = client_app.conf
    yield tasks.app
    tasks.app.close()
    client_app.close()


@pytest.fixture
def cleanup() -> Iterator[list[Started]]:
    """Everything a test started (append to it), stopped at its end whatever happened."""
    started: list[Started] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, Celeriac):
            thing.close()
        else:
            thing.stop()
