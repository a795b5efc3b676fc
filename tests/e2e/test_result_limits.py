"""The broker's size limits through real processes: an oversize result fails its task alone.

The broker runs with small limits so the tests move little data. Before the worker kept within
them, a Report over the message limit ended the worker's session, the resent outcome ended the
next one, and every task of that worker stayed PENDING.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from client import Celeriac
from client.errors import RemoteTaskError
from tests.e2e import tasks
from tests.support import BrokerProcess, WorkerProcess

StartWorker = Callable[..., WorkerProcess]

MAX_PAYLOAD_BYTES = 200_000
MAX_MESSAGE_BYTES = 512 * 1024
POOLS = [
    pytest.param(("--pool", "process", "--concurrency", "2"), id="process"),
    pytest.param(("--pool", "thread", "--concurrency", "2"), id="thread"),
    pytest.param(("--pool", "solo"), id="solo"),
]


@pytest.fixture
def broker_process() -> Iterator[BrokerProcess]:
    """This module's broker: small payload and message limits (overrides the shared one)."""
    with BrokerProcess(
        "--lease-grace",
        "0.5",
        "--max-payload-bytes",
        str(MAX_PAYLOAD_BYTES),
        "--max-message-bytes",
        str(MAX_MESSAGE_BYTES),
    ) as broker:
        yield broker


@pytest.mark.parametrize("pool", POOLS)
def test_an_oversize_result_fails_fast_and_the_worker_goes_on(
    app: Celeriac, start_worker: StartWorker, pool: tuple[str, ...]
) -> None:
    worker = start_worker(*pool)
    # Over the message limit too: as a SUCCESS it would have ended the worker's session.
    big = tasks.sized_result.delay(MAX_MESSAGE_BYTES * 2)
    after = tasks.add.delay(2, 3)
    with pytest.raises(RemoteTaskError, match="ResultTooLarge") as raised:
        big.get(timeout=15)
    assert f"{MAX_PAYLOAD_BYTES:,} bytes" in raised.value.message
    assert big.state == "FAILURE"
    assert after.get(timeout=15) == 5
    assert tasks.add.delay(1, 1).get(timeout=15) == 2
    assert "reconnect" not in worker.output  # the session was never cut


@pytest.mark.parametrize("pool", POOLS[:1])
def test_results_that_together_exceed_the_message_limit_all_arrive(
    app: Celeriac, start_worker: StartWorker, pool: tuple[str, ...]
) -> None:
    """A smoke test: whether outcomes share a Report here depends on timing (it rarely happens
    on a quiet machine); `tests/worker/test_limits.py` checks the splitting itself.
    """
    worker = start_worker(*pool)
    size = MAX_PAYLOAD_BYTES - 100  # each fits, several in one Report would not
    # Sent one by one and read one by one: each result reaches the client on its own.
    results = [tasks.sized_result.delay(size) for _ in range(12)]
    assert [len(result.get(timeout=30)) for result in results] == [size] * 12
    assert "reconnect" not in worker.output
