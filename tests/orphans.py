"""Run a command and report every process it leaves behind: ``python -m tests.orphans CMD ...``.

This process makes itself a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so any
descendant of the command that outlives its parent is re-parented here rather than to init.
SIGTERM and SIGINT are passed on to the command. Once the command has exited, every process
still parented here is one it left behind: each is printed as ``left behind: PID CMDLINE``,
then killed. The exit status is the command's (128 + signal number when a signal ended it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def children_of(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc; zombies are reaped, not listed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, parent = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(parent) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        return "?"


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    command = subprocess.Popen(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: command.send_signal(received))
    code = command.wait()
    for pid in children_of(os.getpid()):
        print(f"left behind: {pid} {cmdline(pid)}", flush=True)
    while True:  # kill and reap them, and whatever they leave here in turn
        for pid in children_of(os.getpid()):
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
