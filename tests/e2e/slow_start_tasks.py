"""A task module whose pool children take a while to start, like a user's that loads a model
in ``worker_process_init``: test_no_orphans.py signals the worker while its pool is starting."""

from __future__ import annotations

import os
import sys
import time

from client import Celeriac
from client.signals import worker_process_init

app = Celeriac("slow_start", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))


@app.task
def noop() -> None:
    """Never called: the worker is stopped before it is ready."""


@worker_process_init.connect
def load_something_slow(**kwargs: object) -> None:
    print(f"CHILD INITIALISING pid={os.getpid()}", file=sys.stderr, flush=True)
    time.sleep(3)  # the work a real initialiser does; the test signals the worker meanwhile
