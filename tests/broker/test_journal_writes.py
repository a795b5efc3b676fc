"""Where the journal writes each batch, and that an answer waits for the write either way.

A real broker on a real port over the real SQLite store, wrapped to note the thread of every
write and to fail a chosen task's first write. Small batches are written on the broker's loop
thread when the writer thread is idle (not under fsync=always); the rest go to the writer
thread. A failed write refuses the answer that was waiting for it on both paths.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import grpc
import pytest

from broker.config import BrokerConfig
from broker.journal.rows import Batch
from broker.journal.sqlite_store import INLINE_ROWS, SQLiteStore
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import client_pb2, client_pb2_grpc
from tests.broker.helpers import spec, submit

JOURNAL_THREAD = "celeriac-journal"


class _Recording(SQLiteStore):
    """The SQLite store, noting which thread wrote which tasks; ``fail`` fails one write."""

    def __init__(self, directory: Path, fsync: str) -> None:
        super().__init__(directory, fsync)
        self.writes: list[tuple[int, str, list[str]]] = []
        self.fail = ""

    def write(self, batch: Batch) -> None:
        ids = [row.task_id for row in batch.rows]
        thread = threading.current_thread()
        self.writes.append((thread.ident or 0, thread.name, ids))
        if self.fail in ids:
            self.fail = ""
            raise OSError(errno.EIO, "Input/output error")
        super().write(batch)

    def writer_of(self, task_id: str) -> tuple[int, str]:
        """The thread (ident, name) of the last write that carried ``task_id``."""
        found = [(ident, name) for ident, name, ids in self.writes if task_id in ids]
        assert found, f"{task_id} was never written"
        return found[-1]


def _stored(directory: Path) -> list[str]:
    reopened = SQLiteStore(directory, "everysec")
    reopened.open()
    try:
        return sorted(row.task_id for row in reopened.load())
    finally:
        reopened.close()


def _loop_thread(broker: RunningBroker) -> int:
    return broker.call(lambda core: threading.get_ident())


def test_a_lone_submit_is_written_on_the_loop_and_answered_only_after_the_write(
    tmp_path: Path,
) -> None:
    store = _Recording(tmp_path, "everysec")
    store.fail = "unwritten"
    with (
        running_broker(BrokerConfig(data_dir=str(tmp_path)), memory_only=False, store=store) as b,
        grpc.insecure_channel(b.address) as channel,
    ):
        tasks = client_pb2_grpc.TaskServiceStub(channel)
        tasks.Submit(submit(task_id="written"), timeout=5)
        loop = _loop_thread(b)
        assert store.writer_of("written")[0] == loop
        # The inline write fails: the answer that waited for it says so instead of acking.
        with pytest.raises(grpc.RpcError) as unrecorded:
            tasks.Submit(submit(task_id="unwritten"), timeout=5)
        assert unrecorded.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "Input/output error" in str(unrecorded.value.details())
        assert store.writer_of("unwritten")[0] == loop
    # The failed task stayed in memory and its retry wrote it before the broker stopped.
    assert _stored(tmp_path) == ["unwritten", "written"]


def test_a_session_submit_is_written_on_the_loop_and_answered_only_after_the_write(
    tmp_path: Path,
) -> None:
    # The client's path (delay() on a Session stream): the answer's own wait runs the write.
    store = _Recording(tmp_path, "everysec")
    store.fail = "unwritten"
    calls = [
        client_pb2.SessionCall(call_id=index + 1, submit=submit(task_id=task_id))
        for index, task_id in enumerate(("written", "unwritten"))
    ]
    with (
        running_broker(BrokerConfig(data_dir=str(tmp_path)), memory_only=False, store=store) as b,
        grpc.insecure_channel(b.address) as channel,
    ):
        replies = list(client_pb2_grpc.TaskServiceStub(channel).Session(iter(calls), timeout=5))
        loop = _loop_thread(b)
        assert [reply.WhichOneof("reply") for reply in replies] == ["submit", "error"]
        assert replies[1].error.reason == "JOURNAL_UNAVAILABLE"
        assert store.writer_of("unwritten")[0] == loop
        assert store.writer_of("written")[0] == loop
    assert _stored(tmp_path) == ["unwritten", "written"]


def test_batches_past_the_inline_size_and_every_batch_under_fsync_always_use_the_thread(
    tmp_path: Path,
) -> None:
    count = INLINE_ROWS + 1
    many = client_pb2.SubmitManyRequest(
        tasks=[spec(task_id=f"many-{index}") for index in range(count)]
    )
    for fsync in ("everysec", "always"):
        directory = tmp_path / fsync
        directory.mkdir()
        store = _Recording(directory, fsync)
        config = BrokerConfig(data_dir=str(directory), fsync=fsync)
        with (
            running_broker(config, memory_only=False, store=store) as broker,
            grpc.insecure_channel(broker.address) as channel,
        ):
            tasks = client_pb2_grpc.TaskServiceStub(channel)
            tasks.SubmitMany(many, timeout=5)
            assert store.writer_of("many-0")[1].startswith(JOURNAL_THREAD)
            tasks.Submit(submit(task_id="lone"), timeout=5)
            on_loop = store.writer_of("lone")[0] == _loop_thread(broker)
            assert on_loop is (fsync != "always"), fsync
        assert len(_stored(directory)) == count + 1
