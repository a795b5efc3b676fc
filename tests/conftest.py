"""Shared fixtures: a real broker process on a free port, and worker processes beside it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.postgres import PostgresServer
from tests.support import BrokerProcess, WorkerProcess


@pytest.fixture
def broker_process() -> Iterator[BrokerProcess]:
    """A `python -m broker serve --port 0` process, stopped after the test."""
    with BrokerProcess("--lease-grace", "0.5") as broker:
        yield broker


@pytest.fixture
def start_worker(broker_process: BrokerProcess) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory for worker processes attached to `broker_process`; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(*args: str, tasks: str = "tests.e2e.tasks", wait_ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(broker_process.address, tasks, *args, wait_ready=wait_ready)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (tests take a database each)."""
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the shared test server."""
    return postgres_server.new_database()
