"""The main job in one command: broker, worker and the first example's producer.

Starts `python -m broker serve --port 0` (in memory, no other server), reads the address it bound,
starts `python -m worker --tasks examples.get_started.tasks` against it, runs the producer
(examples/get_started/run.py), then stops the worker and the broker with SIGTERM and checks that
both exit cleanly. Exits non-zero if any step fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 60.0


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _relay_until(process: subprocess.Popen[str], prefix: str, pattern: str) -> re.Match[str]:
    """Echo the process's output with a prefix until a line matches; keep relaying afterwards."""
    assert process.stdout is not None
    found: list[re.Match[str]] = []
    matched = threading.Event()

    def relay() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            print(f"{prefix} {line.rstrip()}", flush=True)
            match = re.search(pattern, line)
            if match and not matched.is_set():
                found.append(match)
                matched.set()
        matched.set()

    threading.Thread(target=relay, daemon=True).start()
    if not matched.wait(STARTUP_TIMEOUT) or not found:
        raise SystemExit(f"{prefix} did not print {pattern!r}; exit code {process.poll()}")
    return found[0]


def _stop(process: subprocess.Popen[str], name: str) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    print(f"[demo] {name} exited with code {code}", flush=True)
    return code


def main() -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Durable as the plain command is, in a data dir of its own so it never meets another.
    data_dir = tempfile.mkdtemp(prefix="celeriac-demo-")
    print(f"[demo] starting the broker: python -m broker serve --port 0 --data-dir {data_dir}")
    broker = _spawn(["-m", "broker", "serve", "--port", "0", "--data-dir", data_dir], env)
    worker: subprocess.Popen[str] | None = None
    codes: list[int] = []
    try:
        address = _relay_until(broker, "[broker]", r"listening on (\S+)").group(1)
        env["CELERIAC_BROKER"] = address
        print("[demo] starting a worker: python -m worker --tasks examples.get_started.tasks")
        worker = _spawn(["-m", "worker", "--tasks", "examples.get_started.tasks"], env)
        _relay_until(worker, "[worker]", r"worker ready")
        print("[demo] running the producer: python -m examples.get_started.run", flush=True)
        producer = subprocess.run(
            [sys.executable, "-m", "examples.get_started.run"],
            cwd=ROOT,
            env=env,
            timeout=120,
            check=False,
        )
        codes.append(producer.returncode)
    finally:
        if worker is not None:
            codes.append(_stop(worker, "worker"))
        codes.append(_stop(broker, "broker"))
        shutil.rmtree(data_dir, ignore_errors=True)
    ok = all(code == 0 for code in codes)
    print("[demo] done" if ok else f"[demo] FAILED (exit codes {codes})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
