"""A journal written by an older broker (format 1) is rebuilt as format 2 and keeps every task.

The format 1 file is made the way that broker made it (a table keyed by task id, spec arrays
holding the task id as submitted); a real broker then starts on it, and the offline check reads
the result.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from broker.config import BrokerConfig
from broker.core.model import Phase
from broker.journal.sqlite_store import DB_NAME
from broker.testing import running_broker
from tests.support import run_python

_FORMAT_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY, spec TEXT NOT NULL, key_until REAL, args_type TEXT, args BLOB,
    result_type TEXT, result BLOB, state TEXT NOT NULL
);
INSERT INTO meta VALUES ('format_version', '1');
"""


def _format_1_row(task_id: str, seq: int, priority: int) -> tuple[object, ...]:
    spec = f'["tasks.add","{task_id}","default",{{}},{priority},null,null,0,0,"",0,false,0,null]'
    state = f'["queued","PENDING",0,0,0,"","",null,null,{seq},false,null]'
    return (task_id, spec, None, "application/json", b"[[1, 2], {}]", None, None, state)


def test_a_format_1_journal_is_rebuilt_as_format_2_with_its_queue_in_order(
    tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.executescript(_FORMAT_1)
        db.executemany(
            "INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [_format_1_row("second", 2, 0), _format_1_row("first", 1, 0)],
        )
    db.close()
    config = BrokerConfig(data_dir=str(tmp_path))
    with running_broker(config, memory_only=False) as broker:
        queued = broker.call(
            lambda core: [
                (r.task_id, r.phase, r.spec.name, r.args) for r in core.lifecycle.queue("default")
            ]
        )
    assert [(task_id, phase) for task_id, phase, _, _ in queued] == [
        ("first", Phase.QUEUED),
        ("second", Phase.QUEUED),
    ]
    assert all(name == "tasks.add" and args is not None for _, _, name, args in queued)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        indexes = db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'tasks'").fetchall()
    db.close()
    assert version == ("2",)
    assert indexes == [("tasks",)]  # no index on the random task ids any more
    checked = run_python("-m", "broker", "check", "--data-dir", str(tmp_path))
    assert checked.returncode == 0, checked.stderr
    assert "(format 2): 2 tasks (2 queued)" in checked.stdout
