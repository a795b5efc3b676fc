"""A user's own client.py beside their tasks: one line naming it, not an unrelated ImportError."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_a_file_that_hides_the_client_package_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text("def fetch(url):\n    return url\n")
    (tmp_path / "tasks.py").write_text("from client import Celeriac\napp = Celeriac('t')\n")
    completed = subprocess.run(
        [sys.executable, "-m", "worker", "--tasks", "tasks", "--broker", "127.0.0.1:1"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert line.startswith(f"error: {tmp_path / 'client.py'} hides Celeriac's 'client' package")
