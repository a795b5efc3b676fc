"""The data directory and its lock: one broker per directory.

The lock is an ``fcntl.flock`` on ``<dir>/lock``, held for the broker's lifetime. The kernel
drops it when the process ends, however it ends (kill -9 included), so there is never a stale
lock to clean up; the file's content is only the holder's pid, for the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from broker.journal.store import StoreError

LOCK_NAME = "lock"


class DataDirLocked(StoreError):
    """Another process holds the data directory."""


class DataDir:
    """A data directory, created on first use and locked while open.

    Args:
        path: Where; relative paths are resolved against the working directory now.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Create the directory if needed and take its lock.

        Raises:
            DataDirLocked: Another broker holds it (the message names the dir and its pid).
            StoreError: The directory cannot be created or the lock file opened.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StoreError(f"cannot use data dir {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"data dir {self.path} is in use by another broker (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock (closing the file drops it)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
