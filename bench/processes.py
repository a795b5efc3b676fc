"""Child processes the harness owns, and what /proc says about them (CPU time, RSS).

Every child runs in its own session, so stopping it takes its whole process group (a worker's
pool children, a Celery worker's prefork children) with it. Output is read line by line in a
thread, so readiness is detected from a log line rather than guessed with a sleep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# A process start on a loaded 2-core machine imports grpc, protobuf or celery first.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class ProcessFailed(RuntimeError):
    """A child process exited or never printed the line the harness waited for."""


class ManagedProcess:
    """A child process in its own session whose combined output is collected line by line."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        root: Path = ROOT,
    ) -> None:
        """Start ``args`` in ``root`` (a checkout of this project), which leads the import path."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(root), full_env.get("PYTHONPATH", "")) if p
        )
        self.name = name
        self.args = list(args)
        self.process = subprocess.Popen(
            self.args,
            cwd=root,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            self.lines: list[str] = []
            self._changed = threading.Condition()
            self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
            self._reader.start()
        except BaseException:
            # Interrupted before the owner holds this object: it could never stop the child.
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)
            raise

    @classmethod
    def python(
        cls,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        root: Path = ROOT,
    ) -> ManagedProcess:
        """Run `python ARGS` with this interpreter (the project's venv), in ``root``."""
        return cls(name, [sys.executable, *args], env, root)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Block until an output line matches pattern.

        Raises:
            ProcessFailed: the process exited first, or nothing matched within timeout.
        """
        regex = re.compile(pattern)
        index = 0
        with self._changed:
            while True:
                for line in self.lines[index:]:
                    match = regex.search(line)
                    if match:
                        return match
                index = len(self.lines)
                if self.process.poll() is not None and not self._reader.is_alive():
                    break
                if not self._changed.wait(timeout):
                    break
        tail = "\n".join(self.lines[-30:])
        raise ProcessFailed(
            f"{self.name}: no line matching {pattern!r} (exit={self.process.poll()}); "
            f"last output:\n{tail}"
        )

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop on SIGTERM; killing it", self.name)
        # Pool children may outlive their parent; the group takes them all.
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def descendants(pid: int) -> list[int]:
    """The pid and every live descendant of it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU seconds used so far by these processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # utime and stime are fields 14 and 15 of /proc/PID/stat (1-based).
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, from /proc/PID/statm."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * PAGE_SIZE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
