"""A journal that cannot write (disk full, EIO) refuses new work and never acknowledges it.

The write error is injected through the store seam into a real broker serving a real port; the
store beneath is the real SQLite store, so what was recorded is read back from its file.
"""

from __future__ import annotations

import errno
from pathlib import Path

import grpc
import pytest

from broker.config import BrokerConfig
from broker.journal.rows import Batch
from broker.journal.sqlite_store import SQLiteStore
from broker.testing import running_broker
from celeriac.v1 import client_pb2_grpc
from tests.broker.helpers import submit
from tests.support import wait_until


class _FullDisk(SQLiteStore):
    """The SQLite store, with a switch that makes every write fail as a full disk does."""

    full = False

    def write(self, batch: Batch) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(batch)


def test_a_failed_write_refuses_new_work_until_writes_succeed_again(tmp_path: Path) -> None:
    store = _FullDisk(tmp_path, "everysec")
    config = BrokerConfig(data_dir=str(tmp_path))
    with (
        running_broker(config, memory_only=False, store=store) as broker,
        grpc.insecure_channel(broker.address) as channel,
    ):
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        tasks.Submit(submit(task_id="before"), timeout=5)
        store.full = True
        with pytest.raises(grpc.RpcError) as unrecorded:
            tasks.Submit(submit(task_id="unrecorded"), timeout=5)
        assert unrecorded.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "journal write failed (" in str(unrecorded.value.details())
        assert "No space left on device" in str(unrecorded.value.details())
        with pytest.raises(grpc.RpcError) as refused:
            tasks.Submit(submit(task_id="refused"), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        store.full = False

        def accepted() -> bool:
            try:
                tasks.Submit(submit(task_id="after"), timeout=5)
            except grpc.RpcError as error:
                assert error.code() is grpc.StatusCode.UNAVAILABLE
                return False
            return True

        wait_until(accepted, timeout=10)
    reopened = SQLiteStore(tmp_path, "everysec")
    reopened.open()
    stored = sorted(row.task_id for row in reopened.load())
    reopened.close()
    # The unrecorded task stayed in memory and was written by the retry; the refused one was
    # never taken in.
    assert stored == ["after", "before", "unrecorded"]


def test_broker_state_rows_are_put_replaced_and_deleted_with_a_batch(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, "everysec")
    store.open()
    store.write(Batch(state={"periodic/a": '{"v":1}', "periodic/b": '{"v":2}'}))
    store.write(Batch(state={"periodic/a": '{"v":3}', "periodic/b": None}))
    store.close()
    reopened = SQLiteStore(tmp_path, "everysec")
    reopened.open()
    assert list(reopened.load_state()) == [("periodic/a", '{"v":3}')]
    reopened.close()
