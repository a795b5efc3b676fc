"""The hand-off between the process pool and one child: numbered jobs, and who may start them.

Per-message cost dominates the pipe (a write, a read and an epoll wake-up on each side), so the
parent sends short tasks to a child in small batches and the child answers with batches of
outcomes. A job that sits in a child's batch has not started yet, and the parent must still be
able to take it back: to revoke it (terminate of a job that never ran must not run it), or to
give it to another child when the one ahead of it turns out to be long.

`Claims` settles that race with a small table in shared memory and a lock. Every job sent to a
child gets a sequence number; its slot holds `seq * 4 + state`. The child *claims* a job before
running it (QUEUED -> STARTED) and skips it when the parent has *withdrawn* it (QUEUED ->
WITHDRAWN) first. Either side changes a slot only under the lock, so exactly one of them wins.
A slot is reused `SLOTS` jobs later; the parent never has that many in one child, and a reused
slot no longer holds the old number, so a child still holding a withdrawn job skips it.
"""

from __future__ import annotations

import ctypes
import logging
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Lock

logger = logging.getLogger(__name__)

# Table size; must exceed the most jobs the parent keeps in one child at a time.
SLOTS = 256

_QUEUED, _STARTED, _WITHDRAWN = 0, 1, 2

# How long the parent waits for the lock before assuming the child died holding it.
_LOCK_TIMEOUT = 1.0


class Claims:
    """Who may start each job sent to one child: the child (claim) or the parent (withdraw)."""

    def __init__(self, mp: BaseContext) -> None:
        """Allocate the shared table and its lock (pass the object to the child at spawn)."""
        self._table: ctypes.Array[ctypes.c_longlong] = mp.RawArray(ctypes.c_longlong, SLOTS)
        self._lock: Lock = mp.Lock()
        for index in range(SLOTS):
            self._table[index] = -1  # no job: -1 is never seq * 4 + state

    def queued(self, seq: int) -> None:
        """Parent: job `seq` is about to be sent (its slot is free: see the module note)."""
        self._table[seq % SLOTS] = seq * 4 + _QUEUED

    def claim(self, seq: int) -> bool:
        """Child: take job `seq` to run it; False when the parent withdrew it first."""
        slot = seq % SLOTS
        with self._lock:
            if self._table[slot] != seq * 4 + _QUEUED:
                return False
            self._table[slot] = seq * 4 + _STARTED
            return True

    def withdraw(self, seq: int) -> bool:
        """Parent: take job `seq` back before it starts; False when the child started it."""
        slot = seq % SLOTS
        if not self._lock.acquire(timeout=_LOCK_TIMEOUT):
            logger.error(
                "a child process holds its job table lock: treating job %d as started", seq
            )
            return False
        try:
            if self._table[slot] != seq * 4 + _QUEUED:
                return False
            self._table[slot] = seq * 4 + _WITHDRAWN
            return True
        finally:
            self._lock.release()

    def started(self, seq: int) -> bool:
        """Whether the child claimed job `seq` (read by the parent after the child is gone)."""
        return bool(self._table[seq % SLOTS] == seq * 4 + _STARTED)
