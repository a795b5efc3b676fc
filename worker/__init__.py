"""The Celeriac worker: `python -m worker --tasks MODULE` runs tasks from the broker.

Programmatic use mirrors the CLI: load a registry, build a pool, run a `Worker`.
"""

from __future__ import annotations

from worker.config import WorkerConfig
from worker.jobs import Job, Outcome, OutcomeState
from worker.runner import Worker

__all__ = ["Job", "Outcome", "OutcomeState", "Worker", "WorkerConfig"]
