"""The default store: one SQLite database in WAL mode, one row per live task.

Why SQLite: crash safety and checksummed WAL frames come with the standard library (a torn
tail after a crash is ignored by SQLite's own recovery), deleted rows' pages are reused so the
file follows live state rather than history, ``PRAGMA integrity_check`` backs the offline
``check`` command, and operators can open the file with the ``sqlite3`` shell. bench/README.md
compares it with a minimal append-only log of our own.

The fsync policies map onto SQLite's ``synchronous`` setting in WAL mode: ``always`` is FULL
(every commit fsyncs the WAL), ``everysec`` is NORMAL (commits reach the OS; :meth:`sync`
fsyncs the WAL once a second) and ``no`` is OFF.

Rows are keyed by the journal's row keys (``row``, SQLite's rowid), which increase in the order
tasks are first written, so new rows go at the end of the table and a batch touches few pages;
keyed by the random task ids (format 1) every batch rewrote pages all over the index. The task
id is a plain column: the journal never looks a row up by it. A format 1 file is rebuilt as
format 2 in one transaction when it is opened.

SQLite's automatic checkpoints are off: one would run inside whichever commit crossed the WAL's
threshold, and with synchronous=NORMAL it fsyncs, which must not happen on the event loop (the
journal writes small batches there). The journal calls :meth:`checkpoint` on its writer thread
instead, once a second while there are writes and after every few thousand rows.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from broker.core.model import Payload
from broker.journal.rows import FORMAT_VERSION, Batch, StoredTask, new_row_columns
from broker.journal.store import StoreError

logger = logging.getLogger(__name__)

DB_NAME = "celeriac.db"
_SYNCHRONOUS = {"always": "FULL", "everysec": "NORMAL", "no": "OFF"}
# Batches of at most this many rows may be written on the event loop's thread (the journal's
# inline writes); never under fsync=always, where every commit waits for the disk.
INLINE_ROWS = 16
# After a checkpoint (the journal's, at least once a second while there are writes) the next
# commit starts the WAL over and truncates it back to this size, so it stays a few MiB however
# long the broker runs.
_WAL_LIMIT_BYTES = 8 * 1024 * 1024
_WAL_HEADER = 32
_FRAME_HEADER = 24

_META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_TASKS_TABLE = """
CREATE TABLE IF NOT EXISTS tasks (
    row INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    spec TEXT NOT NULL,
    key_until REAL,
    args_type TEXT,
    args BLOB,
    result_type TEXT,
    result BLOB,
    state TEXT NOT NULL
)
"""
_COLUMNS = "task_id, spec, key_until, args_type, args, result_type, result, state"
_INSERT = f"INSERT OR REPLACE INTO tasks (row, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE = "UPDATE tasks SET state = ?, result_type = ?, result = ? WHERE row = ?"
_UPDATE_DROP_ARGS = (
    "UPDATE tasks SET state = ?, result_type = ?, result = ?, args_type = NULL, args = NULL "
    "WHERE row = ?"
)
_DELETE = "DELETE FROM tasks WHERE row = ?"
# Broker state other than tasks (periodic entries); added without changing the format version:
# a journal from before simply has no such rows yet.
_STATE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS broker_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
)
_PUT_STATE = "INSERT OR REPLACE INTO broker_state VALUES (?, ?)"
_DELETE_STATE = "DELETE FROM broker_state WHERE key = ?"


class SQLiteStore:
    """Task rows in ``<data dir>/celeriac.db`` (see the module docstring).

    Args:
        directory: The data directory (created and locked by the caller).
        fsync: "always", "everysec" or "no".
    """

    def __init__(self, directory: Path, fsync: str) -> None:
        self.path = directory / DB_NAME
        self._fsync = fsync
        self._db: sqlite3.Connection | None = None
        # The store seam's optional attribute (broker.journal.store).
        self.inline_rows = 0 if fsync == "always" else INLINE_ROWS

    def open(self) -> None:
        """Open or create the database; refuse a corrupt or foreign one."""
        existed = self.path.exists()
        if existed:
            _warn_torn_wal(self.path)
        try:
            # Used from the writer thread after loading on the loop's: never two at once.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self._fsync]}")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # the journal checkpoints off the loop
            version = _read_version(db) if existed else None
            if version is None:
                db.execute(_META_TABLE)
                db.execute(_TASKS_TABLE)
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('format_version', ?)", (FORMAT_VERSION,)
                )
            elif version == "1":
                _upgrade_from_1(db, self.path)
            elif version != str(FORMAT_VERSION):
                raise StoreError(
                    f"{self.path} has journal format version {version}; this broker reads "
                    f"version {FORMAT_VERSION} (refusing to start rather than lose it)"
                )
            db.execute(_STATE_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is not a usable journal: {error}") from None
        self._db = db

    def load(self) -> Iterator[StoredTask]:
        """Every stored task."""
        cursor = self._conn().execute(f"SELECT row, {_COLUMNS} FROM tasks")
        try:
            for (
                row,
                task_id,
                spec,
                key_until,
                args_type,
                args,
                result_type,
                result,
                state,
            ) in cursor:
                yield StoredTask(
                    task_id,
                    spec,
                    key_until,
                    None if args_type is None else Payload(args_type, args),
                    None if result_type is None else Payload(result_type, result),
                    state,
                    row,
                )
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is corrupt: {error}") from None

    def load_state(self) -> Iterator[tuple[str, str]]:
        """Every stored (key, value) of broker state other than tasks."""
        try:
            yield from self._conn().execute("SELECT key, value FROM broker_state")
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is corrupt: {error}") from None

    def write(self, batch: Batch) -> None:
        """Apply ``batch`` in one transaction."""
        db = self._conn()
        inserts = []
        updates = []
        drops = []
        for row in batch.rows:
            result = row.result
            result_type = None if result is None else result.content_type
            result_body = None if result is None else result.body
            if row.spec is not None:
                inserts.append((row.row, *new_row_columns(row, result_type, result_body)))
            elif row.drop_args:
                drops.append((row.state, result_type, result_body, row.row))
            else:
                updates.append((row.state, result_type, result_body, row.row))
        try:
            db.execute("BEGIN")
            if inserts:
                db.executemany(_INSERT, inserts)
            if updates:
                db.executemany(_UPDATE, updates)
            if drops:
                db.executemany(_UPDATE_DROP_ARGS, drops)
            if batch.deleted_rows:
                db.executemany(_DELETE, [(row,) for row in batch.deleted_rows])
            if batch.state:
                _write_state(db, batch.state)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def sync(self) -> None:
        """Flush the WAL to stable storage (synchronous=NORMAL leaves that to checkpoints)."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def checkpoint(self) -> None:
        """Copy the WAL into the database (the next commit then starts the WAL over)."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Checkpoint and close; the database alone then holds everything."""
        if self._db is None:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"{self.path} is not open")
        return self._db


def _write_state(db: sqlite3.Connection, state: dict[str, str | None]) -> None:
    puts = [(key, value) for key, value in state.items() if value is not None]
    if puts:
        db.executemany(_PUT_STATE, puts)
    deletes = [(key,) for key, value in state.items() if value is None]
    if deletes:
        db.executemany(_DELETE_STATE, deletes)


def _read_version(db: sqlite3.Connection) -> str | None:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables:
        if tables:
            raise StoreError("the database holds tables but no Celeriac format version")
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    return None if row is None else str(row[0])


def _upgrade_from_1(db: sqlite3.Connection, path: Path) -> None:
    """Rebuild a format 1 table (keyed by task id) as format 2, in one transaction.

    Rows keep their order; their spec arrays stay version 1, which rows.py still reads.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE tasks RENAME TO tasks_format_1")
        db.execute(_TASKS_TABLE)
        db.execute(
            f"INSERT INTO tasks ({_COLUMNS}) SELECT {_COLUMNS} FROM tasks_format_1 ORDER BY rowid"
        )
        moved = db.execute("SELECT changes()").fetchone()[0]
        db.execute("DROP TABLE tasks_format_1")
        db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    logger.warning(
        "journal %s: format 1 rebuilt as format %d (%d tasks)", path, FORMAT_VERSION, moved
    )


def _warn_torn_wal(path: Path) -> None:
    """Log a WAL whose tail is not a whole frame: a write cut short by a crash.

    SQLite's recovery keeps only complete, checksummed commits and ignores the rest; this only
    makes that visible in the log.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        size = wal.stat().st_size
        if size <= _WAL_HEADER:
            return
        with wal.open("rb") as handle:
            header = handle.read(_WAL_HEADER)
        page_size = int.from_bytes(header[8:12], "big")
    except OSError:
        return
    frame = _FRAME_HEADER + page_size
    torn = (size - _WAL_HEADER) % frame if page_size else 0
    if torn:
        logger.warning(
            "journal %s ends in a torn write (%d bytes of an incomplete frame, a crash "
            "mid-write): SQLite's recovery skips it and keeps every complete commit",
            wal,
            torn,
        )
