"""The broker's limits as the Python client raises them: by reason, with the limit's facts."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig
from broker.testing import running_broker
from client import Celeriac
from client.errors import LimitExceeded, QueueFull
from tests.broker.fake_worker import FakeWorker


def test_a_session_refused_at_the_peers_limit_raises_limit_exceeded_with_its_reason() -> None:
    with running_broker(BrokerConfig(max_sessions_per_peer=1)) as broker:
        worker = FakeWorker(broker.address)  # holds this host's only session
        try:
            with Celeriac("limits", broker=broker.address, connect_timeout=5) as app:
                with pytest.raises(LimitExceeded) as raised:
                    app.send_task("tasks.add", args=(1, 2), queue="limits")
                assert not isinstance(raised.value, QueueFull)
                assert raised.value.reason == "SESSIONS_EXCEEDED"
                assert raised.value.metadata["limit"] == "max_sessions_per_peer"
        finally:
            worker.close()


def test_held_bytes_refuse_a_submit_with_limit_exceeded() -> None:
    config = BrokerConfig(max_held_bytes=1_000, max_payload_bytes=1_000)
    with running_broker(config) as broker, Celeriac("limits", broker=broker.address) as app:
        app.send_task("tasks.add", args=("x" * 600,), queue="limits")
        with pytest.raises(LimitExceeded) as raised:
            app.send_task("tasks.add", args=("x" * 600,), queue="limits")
        assert raised.value.reason == "HELD_BYTES_EXCEEDED"
        assert raised.value.metadata["max"] == "1000"
