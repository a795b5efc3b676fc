"""The store seam: what the journal needs from wherever task rows live.

The journal (:mod:`broker.journal.journal`) is the only caller. It calls :meth:`Store.open` and
:meth:`Store.load` once, on the event loop's thread before the broker serves anyone, and every
other method one call at a time, never two at once, so a store needs no locking of its own:
from ONE writer thread, except that a store with a non-zero ``inline_rows`` attribute also gets
``write()`` calls of at most that many rows on the event loop's thread while nothing is with
the writer thread. Such a write must not block on anything slow (no fsync, no network); a store
without the attribute is never called on the loop.

The contract:

- ``open()`` makes the store ready, creating it when it is new. It raises :class:`StoreError`
  with a one-line message when the data is corrupt or written by an unknown format version;
  it never starts over silently.
- ``load()`` yields every stored task once (any order; the broker restores queue order from
  each row's sequence number) and then every idempotency key is part of its task's row. A
  store that keeps the journal's row keys returns them in ``StoredTask.row``.
- ``write(batch)`` applies one batch atomically: each :class:`~broker.journal.rows.TaskRow`
  with a spec is inserted (or replaces the row), one without a spec updates the state (and
  result, and clears the arguments when ``drop_args``) of an existing row, and ``deletes``
  (by task id) or ``deleted_rows`` (by row key) removes rows. A store may key its rows by
  task id or by the journal's row keys (``TaskRow.row``: unique per task, increasing in the
  order tasks are first written). When it returns, the batch must be durable as ``fsync``
  promises: written to the OS for ``everysec`` and ``no``, on stable storage for ``always``.
  Any failure raises (OSError or the store's own error) and leaves the batch entirely
  unapplied; the journal then refuses new work and retries the same changes.
- ``load_state()`` yields every (key, value) of the broker state that is not tasks
  (periodic entries, see ``Batch.state``); ``write`` upserts ``batch.state``'s values and
  deletes its keys whose value is None, in the same transaction as the task rows.
- ``sync()`` puts everything written so far on stable storage (``everysec`` calls it once a
  second when there were writes).
- ``checkpoint()`` keeps the files in proportion to live state (``compact`` in other stores);
  the journal calls it on the writer thread once a second while there are writes.
- ``close()`` writes nothing new, leaves the files consistent and releases them.

A shared store (PostgreSQL, several brokers) implements the same methods; nothing in
``broker.core`` knows which store is in use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from broker.journal.rows import Batch, StoredTask


class StoreError(Exception):
    """The store cannot be used: corrupt, an unknown format version, or not openable."""


class Store(Protocol):
    """Where task rows live (see the module docstring for the contract)."""

    def open(self) -> None:
        """Create or open the store; raises StoreError when it cannot be used."""

    def load(self) -> Iterator[StoredTask]:
        """Every stored task."""

    def load_state(self) -> Iterator[tuple[str, str]]:
        """Every stored (key, value) of broker state other than tasks."""

    def write(self, batch: Batch) -> None:
        """Apply ``batch`` atomically, durable per the fsync policy when this returns."""

    def sync(self) -> None:
        """Put everything written so far on stable storage."""

    def checkpoint(self) -> None:
        """Bound the files to live state."""

    def close(self) -> None:
        """Release the store."""
