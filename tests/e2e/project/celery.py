"""The project's app module, as in a Django project's ``proj/celery.py``."""

from __future__ import annotations

import os

from client import Celeriac

app = Celeriac("project", broker=os.environ.get("CELERIAC_BROKER", "127.0.0.1:7475"))
app.autodiscover_tasks(["tests.e2e.project.reports", "tests.e2e.project"])
