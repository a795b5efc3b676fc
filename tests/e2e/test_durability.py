"""The durable broker through real processes, real signals and temporary data dirs.

A broker killed with SIGKILL (or stopped with SIGTERM) and started again on the same data dir
has everything it acknowledged: queues in order, schedules, leases, revokes, dead letters,
idempotency keys and results. The journal's failure modes (torn tail, corrupt or foreign file,
a second broker on the same dir) are refused or repaired with one clear line.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import Celeriac
from client.canvas import Signature, group
from client.result import AsyncResult
from tests.e2e.conftest import Started
from tests.support import BrokerProcess, WorkerProcess, run_python

TASKS = "tests.e2e.tasks"


def _app(broker: BrokerProcess) -> Celeriac:
    return Celeriac("durability", broker=broker.address, connect_timeout=2)


def _serving(data_dir: Path, cleanup: list[Started]) -> tuple[BrokerProcess, Celeriac]:
    """A broker on ``data_dir`` and a client app for it, both stopped at the test's end."""
    broker = BrokerProcess("--data-dir", str(data_dir))
    app = _app(broker)
    cleanup += [broker, app]
    return broker, app


def _state(app: Celeriac, task_id: str) -> str:
    return AsyncResult(task_id, app=app).state


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@dataclass
class Acknowledged:
    """What a broker acknowledged before it was killed: one task in every phase."""

    added: AsyncResult
    failed: AsyncResult
    leased: AsyncResult
    queued: list[AsyncResult]
    scheduled: AsyncResult
    revoked: AsyncResult
    keyed: AsyncResult


def acknowledge_one_of_everything(app: Celeriac, side: WorkerProcess, runs: Path) -> Acknowledged:
    """Results, a dead letter, a running task, queued, scheduled, revoked and keyed tasks."""
    added = app.send_task(f"{TASKS}.add", args=(2, 3), queue="side")
    assert added.get(timeout=20) == 5
    failed = app.send_task(f"{TASKS}.fail", args=("boom",), queue="side")
    failed.get(timeout=20, propagate=False)
    leased = app.send_task(f"{TASKS}.block_first_attempt", args=("m",), queue="side")
    side.wait_for_line(f"BLOCKING {leased.id}")
    queued = [app.send_task(f"{TASKS}.record", args=(str(runs), f"q{i}")) for i in range(5)]
    scheduled = app.send_task(f"{TASKS}.record", args=(str(runs), "scheduled"), countdown=2)
    revoked = app.send_task(f"{TASKS}.record", args=(str(runs), "revoked"))
    revoked.revoke()
    keyed = app.send_task(f"{TASKS}.record", args=(str(runs), "keyed"), idempotency_key="k-1")
    return Acknowledged(added, failed, leased, queued, scheduled, revoked, keyed)


def assert_everything_back(
    acked: Acknowledged, again: Celeriac, broker: BrokerProcess, runs: Path, cleanup: list[Started]
) -> None:
    """After a restart: every result and state is back, and every unfinished task runs once."""
    broker.wait_for_line(r"recovered 11 tasks .* 6 queued, 1 scheduled, 1 leased, 3 finished")
    assert AsyncResult(acked.added.id, app=again).get(timeout=5) == 5
    assert _state(again, acked.failed.id) == "FAILURE"
    assert _state(again, acked.revoked.id) == "REVOKED"
    assert [_state(again, r.id) for r in acked.queued] == ["PENDING"] * 5
    duplicate = again.send_task(f"{TASKS}.record", args=(str(runs), "dup"), idempotency_key="k-1")
    assert duplicate.id == acked.keyed.id
    dead = run_python("-m", "broker", "dead", "list", "--broker", broker.address)
    assert acked.failed.id in dead.stdout, dead.stdout + dead.stderr

    worker = WorkerProcess(broker.address, TASKS, "--queues", "default,side", "--pool", "solo")
    cleanup.append(worker)
    # The leased task's worker never came back: requeued after the grace, attempt counted.
    assert AsyncResult(acked.leased.id, app=again).get(timeout=30) == "done on attempt 2"
    for result in [*acked.queued, acked.scheduled, acked.keyed]:
        AsyncResult(result.id, app=again).get(timeout=30)
    lines = runs.read_text().split()
    assert sorted(lines) == sorted([f"q{i}" for i in range(5)] + ["scheduled", "keyed"])
    assert [line for line in lines if line.startswith("q")] == [f"q{i}" for i in range(5)]


def test_kill_9_then_restart_brings_back_everything_acknowledged(
    data_dir: Path, tmp_path: Path, cleanup: list[Started]
) -> None:
    runs = tmp_path / "runs.txt"
    first = BrokerProcess("--data-dir", str(data_dir))
    side = WorkerProcess(first.address, TASKS, "--queues", "side", "--pool", "solo")
    app = _app(first)
    cleanup += [first, side, app]
    acked = acknowledge_one_of_everything(app, side, runs)

    side.stop_hard()  # the whole machine went down: broker and worker alike
    first.stop_hard()
    second, again = _serving(data_dir, cleanup)
    assert_everything_back(acked, again, second, runs, cleanup)


def test_sigterm_under_load_loses_no_acknowledged_submit(
    data_dir: Path, cleanup: list[Started]
) -> None:
    first, app = _serving(data_dir, cleanup)
    acknowledged: list[str] = []
    enough = threading.Event()

    def submit_until_refused() -> None:
        try:
            while True:
                acknowledged.append(app.send_task(f"{TASKS}.add", args=(1, 1)).id)
                if len(acknowledged) == 300:
                    enough.set()
        except Exception:
            enough.set()

    submitter = threading.Thread(target=submit_until_refused, daemon=True)
    submitter.start()
    assert enough.wait(30)
    first.signal(15)
    submitter.join(30)
    assert first.wait() == 0
    _, again = _serving(data_dir, cleanup)
    assert len(acknowledged) >= 300
    lost = [task_id for task_id in acknowledged if _state(again, task_id) == "UNKNOWN"]
    assert lost == []


def test_a_torn_wal_tail_is_logged_and_every_complete_commit_is_kept(
    data_dir: Path, cleanup: list[Started]
) -> None:
    first, app = _serving(data_dir, cleanup)
    kept = [app.send_task(f"{TASKS}.add", args=(i, i)).id for i in range(10)]
    app.send_task(f"{TASKS}.add", args=(0, 0))  # the last commit, about to be torn
    first.stop_hard()
    wal = data_dir / "celeriac.db-wal"
    wal.write_bytes(wal.read_bytes()[:-100])  # a write cut short mid-frame
    second, again = _serving(data_dir, cleanup)
    second.wait_for_line(r"ends in a torn write \(\d+ bytes of an incomplete frame")
    assert [_state(again, task_id) for task_id in kept] == ["PENDING"] * 10


def test_a_second_broker_on_the_same_data_dir_refuses_with_one_line(
    data_dir: Path, cleanup: list[Started]
) -> None:
    first = BrokerProcess("--data-dir", str(data_dir))
    cleanup.append(first)
    refused = run_python("-m", "broker", "serve", "--port", "0", "--data-dir", str(data_dir))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: data dir {data_dir} is in use by another broker (pid {first.process.pid})"
    )


def test_a_corrupt_journal_refuses_to_start_and_check_says_why(data_dir: Path) -> None:
    with BrokerProcess("--data-dir", str(data_dir)) as broker:
        app = _app(broker)
        app.send_task(f"{TASKS}.add", args=(1, 2))
        app.close()
    assert run_python("-m", "broker", "check", "--data-dir", str(data_dir)).returncode == 0
    database = data_dir / "celeriac.db"
    database.write_bytes(b"not a database at all" + database.read_bytes()[21:])
    refused = run_python("-m", "broker", "serve", "--port", "0", "--data-dir", str(data_dir))
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {database} is not a usable journal"), refused.stderr
    checked = run_python("-m", "broker", "check", "--data-dir", str(data_dir))
    assert checked.returncode == 1
    assert checked.stderr.startswith("corrupt:"), checked.stderr


def test_an_unknown_format_version_refuses_to_start(data_dir: Path) -> None:
    with BrokerProcess("--data-dir", str(data_dir)):
        pass
    with sqlite3.connect(data_dir / "celeriac.db") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    db.close()
    refused = run_python("-m", "broker", "serve", "--port", "0", "--data-dir", str(data_dir))
    assert refused.returncode == 2
    assert "journal format version 99; this broker reads version 2" in refused.stderr


def test_check_reports_what_a_sound_data_dir_holds(data_dir: Path) -> None:
    with BrokerProcess("--data-dir", str(data_dir)) as broker:
        app = _app(broker)
        for i in range(3):
            app.send_task(f"{TASKS}.add", args=(i, i))
        app.send_task(f"{TASKS}.add", args=(0, 0), countdown=600)
        app.close()
    checked = run_python("-m", "broker", "check", "--data-dir", str(data_dir))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip().endswith("4 tasks (3 queued, 1 scheduled)")
    missing = run_python("-m", "broker", "check", "--data-dir", str(data_dir / "nowhere"))
    assert missing.returncode == 2


# A fresh journal's pages (schema, meta, the first index pages) before any task.
_FILE_OVERHEAD = 256 * 1024


def _live_row_bytes(database: Path) -> int:
    """The bytes of the rows the journal holds now, as read by a second (read-only) connection."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        (total,) = db.execute(
            "SELECT total(8 + length(task_id) + length(spec) + length(state)"
            " + ifnull(length(args), 0) + ifnull(length(result), 0)) FROM tasks"
        ).fetchone()
    db.close()
    return int(total)


def test_the_files_follow_live_state_not_history(data_dir: Path, cleanup: list[Started]) -> None:
    broker = BrokerProcess("--data-dir", str(data_dir))
    worker = WorkerProcess(broker.address, TASKS, "--concurrency", "2")
    app = _app(broker)
    cleanup += [broker, worker, app]
    database, wal = data_dir / "celeriac.db", data_dir / "celeriac.db-wal"
    sizes, held = [], []
    for _ in range(5):  # 20,000 tasks through, each forgotten once done
        batch = group(Signature(app, f"{TASKS}.add", (i, i)) for i in range(4_000))
        done = batch.apply_async()
        done.get(timeout=50)
        held.append(_live_row_bytes(database))  # the round's 4,000 rows, all there at once
        done.forget()
        sizes.append((database.stat().st_size, wal.stat().st_size))
    # Freed pages are reused: the database stays the size of the most rows held at once, plus
    # SQLite's page and index overhead (well under the rows' own bytes again). A table of
    # history would hold all five rounds' rows: over 5x.
    assert sizes[-1][0] <= 2 * max(held) + _FILE_OVERHEAD, (sizes, held)
    # Checkpoints bound the WAL (one second of writes, truncated past 8 MiB).
    assert max(wal_size for _, wal_size in sizes) < 12 * 1024 * 1024, sizes
