"""``python -m broker check``: verify a data dir offline.

Runs SQLite's full ``integrity_check``, checks the format version and decodes every row the
way a starting broker would. Exit status 0 when the journal is sound, 1 when it is not (with
one line saying what is wrong), 2 when there is no journal at the path.
"""

from __future__ import annotations

import sqlite3
import sys
from collections import Counter
from pathlib import Path

from broker.journal.rows import FORMAT_VERSION, decode
from broker.journal.sqlite_store import DB_NAME, SQLiteStore
from broker.journal.store import StoreError

RET_OK = 0
RET_CORRUPT = 1
RET_MISSING = 2


def run(data_dir: str) -> int:
    """Check ``data_dir``, print the verdict, return the exit status."""
    path = Path(data_dir).resolve()
    db = path / DB_NAME
    if not db.is_file():
        print(f"error: no journal at {db}", file=sys.stderr)
        return RET_MISSING
    try:
        _integrity(db)
        counts = _decode_all(path)
    except StoreError as error:
        print(f"corrupt: {error}", file=sys.stderr)
        return RET_CORRUPT
    summary = ", ".join(f"{count} {phase}" for phase, count in sorted(counts.items()))
    print(f"ok: {db} (format {FORMAT_VERSION}): {sum(counts.values())} tasks ({summary or 'none'})")
    return RET_OK


def _integrity(db: Path) -> None:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{db}: {error}") from None
    if problems != ["ok"]:
        raise StoreError(f"{db}: integrity check failed: {'; '.join(problems[:5])}")


def _decode_all(path: Path) -> Counter[str]:
    # Opening through the store checks the format version exactly as the broker does. It may
    # replay a WAL left by a crash, which is what the broker would do first thing too.
    store = SQLiteStore(path, "no")
    store.open()
    counts: Counter[str] = Counter()
    try:
        for stored in store.load():
            try:
                counts[decode(stored).phase.value] += 1
            except ValueError as error:
                raise StoreError(str(error)) from None
    finally:
        store.close()
    return counts
