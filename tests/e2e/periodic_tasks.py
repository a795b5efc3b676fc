"""Periodic tasks declared the Celery way, for tests/e2e/test_periodic.py.

Each run prints its entry's label, its tick and its missed-tick count, so a test can wait for
runs in the worker's output.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from client import Celeriac, Task
from client.schedules import crontab

app = Celeriac("e2e-periodic", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))

PERIOD = 0.2
# UTC+5:45: its crontabs tick at minutes the same expression in UTC never would.
app.conf.timezone = "Asia/Kathmandu"
app.conf.beat_schedule = {
    "heartbeat": {"task": "tests.e2e.periodic_tasks.beat", "schedule": PERIOD, "args": ("fast",)},
}


@app.on_after_configure.connect
def setup_periodic_tasks(sender: Celeriac, **kwargs: Any) -> None:
    sender.add_periodic_task(crontab(minute="*/30"), beat.s("half-hourly"), name="half-hourly")


@app.task(bind=True)
def beat(self: Task, label: str) -> None:
    """Say which tick this run is for."""
    headers = self.request.headers
    line = (
        f"BEAT {label} tick={headers['celeriac-periodic-tick']} "
        f"missed={headers.get('celeriac-periodic-missed', '0')} id={self.request.id}\n"
    )
    # One write: print() writes the text and its newline apart, so two runs in two pool
    # threads could share a line and one of them would be lost to the test.
    sys.stdout.write(line)
    sys.stdout.flush()
