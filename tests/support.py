"""Helpers that run Celeriac the way users do: real processes, real ports, real signals.

`BrokerProcess` runs `python -m broker serve --port 0` and reads the address it bound from its
first log line; `WorkerProcess` runs `python -m worker` and waits for its "worker ready" line.
Both keep reading their process's output in a thread, so a test can wait for any later line
(`wait_for_line`) instead of sleeping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\S+)")
# Generous: a process start on a loaded 2-core machine imports grpc and protobuf first.
START_TIMEOUT = 30.0
# How long a timed-out run_python process gets to stop what it started after SIGTERM.
STOP_GRACE = 10.0


def run_python(
    *args: str, timeout: float = 50.0, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``args`` in the project root and return what it printed.

    For code that must run in a fresh process: process-wide settings, or a command's output.
    ``env`` adds to (or overrides) this process's environment. Past ``timeout`` the process
    gets SIGTERM first, so a program that started processes of its own (the benchmark harness,
    the demo) stops them rather than leaving them running; then SIGKILL, and TimeoutExpired.
    """
    with subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env} if env is not None else None,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.communicate(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 20.0,
    message: str = "the condition never held",
    interval: float = 0.01,
) -> None:
    """Re-check ``predicate`` every ``interval`` seconds until it is true; fail after ``timeout``.

    The one polling helper, for states that have no event or line to wait on (a broker's
    counter, a file a task creates, a process that must be gone).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout}s)")
        time.sleep(interval)


class LoggedProcess:
    """A child process whose combined output is collected line by line."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        program: str = sys.executable,
    ) -> None:
        """Start ``program`` (this interpreter unless told) with ``args`` in ``cwd``."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
        )
        self.args = list(args)
        self.process = subprocess.Popen(
            [program, *args],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(
        self, pattern: str, timeout: float = START_TIMEOUT, start: int = 0
    ) -> re.Match[str]:
        """Block until a line at index >= start matches pattern; fail with the output otherwise.

        ``timeout`` bounds the whole wait, not each silence: a process that keeps printing
        other lines (a periodic task's runs) must not keep a test waiting forever.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            index = start
            ended = False
            while True:
                while index < len(self.lines):
                    match = regex.search(self.lines[index])
                    if match:
                        return match
                    index += 1
                if ended:
                    break
                ended = self.process.poll() is not None and not self._reader.is_alive()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._changed.wait(remaining):
                    break
        raise AssertionError(
            f"no line matching {pattern!r} within {timeout}s from {self.args}; "
            f"exit={self.process.poll()} output:\n{self.output}"
        )

    def line_count(self) -> int:
        """How many lines have been read so far (a start index for later waits)."""
        with self._changed:
            return len(self.lines)

    def signal(self, signum: int) -> None:
        """Send a real signal to the process."""
        self.process.send_signal(signum)

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for exit and return the exit code."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        self._close_pipe()
        return code

    def stop_hard(self) -> None:
        """SIGKILL the whole process group at once, as a crashed machine would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)
        self._close_pipe()

    def stop(self) -> None:
        """Terminate politely, then kill the whole process group if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(10)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class BrokerProcess(LoggedProcess):
    """`python -m broker serve --port 0 ...`; `.address` is what it bound.

    Durable like the real command, in a temporary data dir of its own (removed by ``stop``)
    unless the arguments name ``--data-dir`` or ``--memory-only``.
    """

    def __init__(self, *extra_args: str, port: int = 0, env: dict[str, str] | None = None) -> None:
        self._own_data_dir: str | None = None
        if "--data-dir" not in extra_args and "--memory-only" not in extra_args:
            self._own_data_dir = tempfile.mkdtemp(prefix="celeriac-test-data-")
            extra_args = ("--data-dir", self._own_data_dir, *extra_args)
        super().__init__(
            ["-m", "broker", "serve", "--port", str(port), "--log-level", "info", *extra_args], env
        )
        self.address = self.wait_for_line(LISTENING.pattern).group(1)

    def stop(self) -> None:
        """Terminate as LoggedProcess does, then remove the data dir it made for itself."""
        super().stop()
        if self._own_data_dir is not None:
            shutil.rmtree(self._own_data_dir, ignore_errors=True)


class WorkerProcess(LoggedProcess):
    """`python -m worker --tasks MODULE ...`, returned once it says it is ready."""

    def __init__(
        self,
        broker: str,
        tasks: str = "tests.e2e.tasks",
        *extra_args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
    ) -> None:
        super().__init__(
            [
                "-m",
                "worker",
                "--tasks",
                tasks,
                "--broker",
                broker,
                "--loglevel",
                "info",
                *extra_args,
            ],
            env,
        )
        if wait_ready:
            self.wait_for_line("worker ready")
