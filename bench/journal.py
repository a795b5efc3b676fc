"""`python -m bench.journal stores|encode|recovery`: the journal's own micro-benchmarks.

- ``stores``: the broker's write pattern (each task inserted, finished with its result, then
  deleted, in batches as group commit makes them) through the SQLite store and through a
  minimal append-only log of our own (length, CRC32 and JSON per record; one write and, for
  ``always``, one fsync per batch; no compaction or index, so it is a lower bound on what an
  own format would cost). Rows per second for each fsync policy.
- ``encode``: the cost per task of encoding rows on the event loop (``broker.journal.rows``).
- ``recovery``: writes N queued tasks with the real store, then times a start's recovery
  (load, decode, restore into a fresh core) and reports the journal's bytes per queued task.

These measure the store alone, in one process; ``make bench`` measures the broker end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.model import Payload, Phase, TaskRecord, TaskSpec, TaskState
from broker.journal.journal import CHECKPOINT_ROWS, Journal
from broker.journal.rows import Batch, TaskRow, encode
from broker.journal.sqlite_store import DB_NAME, SQLiteStore

ARGS = Payload("application/json", b"[[1, 2], {}]")
RESULT = Payload("application/json", b"3")
POLICIES = ("no", "everysec", "always")


def _record(index: int) -> TaskRecord:
    record = TaskRecord(f"{index:08d}-6f1c-4a0e-9b7d-{index:012d}", TaskSpec(name="tasks.add"))
    record.args = ARGS
    record.seq = index
    return record


def _first_row(record: TaskRecord) -> TaskRow:
    """The row of ``record``'s first write, keyed as the journal keys it."""
    row = encode(record, lambda spec: 0.0)
    row.row = record.journal_row = record.seq + 1
    return row


def _batches(tasks: int, batch: int) -> list[Batch]:
    """Every task's three writes (insert, finish, delete), ``batch`` changes per commit."""
    inserts, finishes, deletes = [], [], []
    for index in range(tasks):
        record = _record(index)
        inserts.append((record.task_id, _first_row(record)))
        record.phase, record.state, record.args = Phase.FINISHED, TaskState.SUCCESS, None
        record.result, record.date_done = RESULT, 1.0
        finishes.append((record.task_id, encode(record, lambda spec: 0.0)))
        deletes.append((record.task_id, record.journal_row))
    # As a busy broker writes them: each batch takes in new tasks, finishes earlier ones and
    # drops the results of earlier ones still (lagging by a batch, so never in one row).
    lag = max(1, batch)
    changes: list[tuple[str, TaskRow | int]] = []
    for index in range(tasks + 2 * lag):
        if index < tasks:
            changes.append(inserts[index])
        if 0 <= index - lag < tasks:
            changes.append(finishes[index - lag])
        if 0 <= index - 2 * lag < tasks:
            changes.append(deletes[index - 2 * lag])
    batches = []
    for start in range(0, len(changes), batch):
        current = Batch()
        for task_id, row in changes[start : start + batch]:
            if isinstance(row, int):
                current.deletes.append(task_id)
                current.deleted_rows.append(row)
            else:
                current.rows.append(row)
        batches.append(current)
    return batches


class AppendOnlyLog:
    """The minimal own format: [length][crc32][json] records appended, one write per batch."""

    def __init__(self, directory: Path, fsync: str) -> None:
        self._fd = os.open(directory / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fsync = fsync

    def write(self, batch: Batch) -> None:
        parts = []
        for row in batch.rows:
            record: list[object] = [row.task_id, row.state, row.spec, row.drop_args]
            if row.args is not None:
                record.append([row.args.content_type, row.args.body.decode()])
            if row.result is not None:
                record.append([row.result.content_type, row.result.body.decode()])
            parts.append(json.dumps(record).encode())
        parts.extend(json.dumps(["-", task_id]).encode() for task_id in batch.deletes)
        framed = b"".join(
            len(part).to_bytes(4, "little") + zlib.crc32(part).to_bytes(4, "little") + part
            for part in parts
        )
        os.write(self._fd, framed)
        if self._fsync == "always":
            os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _rate(store: SQLiteStore | AppendOnlyLog, batches: list[Batch]) -> float:
    started = time.perf_counter()
    unchecked = 0
    for batch in batches:
        store.write(batch)
        unchecked += len(batch)
        if isinstance(store, SQLiteStore) and unchecked >= CHECKPOINT_ROWS:
            store.checkpoint()  # as the journal does (it also does once a second)
            unchecked = 0
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


def stores(tasks: int) -> None:
    for batch in (1, 100):
        for policy in POLICIES:
            # Few enough commits that fsync-per-commit runs finish in seconds.
            count = tasks if batch > 1 or policy != "always" else min(tasks, 500)
            batches = _batches(count, batch)
            rates = {}
            for name in ("sqlite", "own log"):
                directory = Path(tempfile.mkdtemp(prefix="celeriac-store-bench-"))
                try:
                    store: SQLiteStore | AppendOnlyLog
                    if name == "sqlite":
                        store = SQLiteStore(directory, policy)
                        store.open()
                    else:
                        store = AppendOnlyLog(directory, policy)
                    rates[name] = _rate(store, batches)
                    store.close()
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
            print(
                f"batch={batch:<4} fsync={policy:<9} sqlite {rates['sqlite']:>10,.0f} rows/s   "
                f"own log {rates['own log']:>10,.0f} rows/s   "
                f"own/sqlite {rates['own log'] / rates['sqlite']:.2f}x",
                flush=True,
            )


def encode_cost(tasks: int) -> None:
    records = [_record(index) for index in range(tasks)]
    started = time.perf_counter()
    for record in records:
        encode(record, lambda spec: 0.0)
    first = (time.perf_counter() - started) / tasks
    for index, record in enumerate(records, 1):
        record.journal_row = index
    started = time.perf_counter()
    for record in records:
        encode(record, lambda spec: 0.0)
    update = (time.perf_counter() - started) / tasks
    print(f"encode per task: first write {first * 1e6:.1f} us, state update {update * 1e6:.1f} us")


def recovery(tasks: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="celeriac-recovery-bench-"))
    try:
        store = SQLiteStore(directory, "no")
        store.open()
        for start in range(0, tasks, 10_000):
            batch = Batch()
            for index in range(start, min(tasks, start + 10_000)):
                batch.rows.append(_first_row(_record(index)))
            store.write(batch)
            store.checkpoint()  # as the journal does while writing
        store.close()
        size = (directory / DB_NAME).stat().st_size
        store = SQLiteStore(directory, "everysec")
        store.open()
        loop = asyncio.new_event_loop()
        started = time.perf_counter()
        recovered = Journal(store, Broker(BrokerConfig()), "everysec", loop).recover()
        seconds = time.perf_counter() - started
        store.close()
        loop.close()
        print(
            f"recovery of {recovered.queued:,} queued tasks: {seconds:.2f} s; "
            f"journal {size / tasks:.0f} bytes per queued task"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__)
    parser.add_argument("what", choices=("stores", "encode", "recovery"))
    parser.add_argument("--tasks", type=int, default=20_000)
    args = parser.parse_args()
    {"stores": stores, "encode": encode_cost, "recovery": recovery}[args.what](args.tasks)


if __name__ == "__main__":
    main()
