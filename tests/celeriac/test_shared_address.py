"""A worker process and a client given the same CELERIAC_BROKER reach the same broker."""

from __future__ import annotations

import pytest

from client import Celeriac
from tests.support import BrokerProcess, LoggedProcess

TIMEOUT = 30.0


def test_a_worker_and_a_client_share_one_ipv6_url(monkeypatch: pytest.MonkeyPatch) -> None:
    with BrokerProcess("--host", "::1") as broker:
        port = broker.address.rpartition(":")[2]
        url = f"grpc://[::1]:{port}/"
        env = {"CELERIAC_BROKER": url}
        monkeypatch.setenv("CELERIAC_BROKER", url)
        worker_args = ["-m", "worker", "--tasks", "tests.e2e.tasks", "--pool", "solo"]
        with LoggedProcess(worker_args, env) as worker:
            worker.wait_for_line("worker ready")
            with Celeriac("shared-address") as app:
                assert app.conf.target == f"[::1]:{port}"
                result = app.send_task("tests.e2e.tasks.add", (2, 3))
                assert result.get(timeout=TIMEOUT) == 5
