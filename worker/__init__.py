"""The Celeriac worker: `python -m worker --tasks MODULE` runs tasks from the broker.

Programmatic use mirrors the CLI: load a registry, build a pool, run a `Worker`.
"""

from __future__ import annotations

# Before any module of ours imports grpc: gRPC's faster socket layer (why, how much and the
# opt-out: broker/grpc_stack.py). A GRPC_EXPERIMENTS already set wins.
import os

os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

from worker._shadowing import refuse_shadowed_packages

refuse_shadowed_packages()  # before the imports below pull in `client`

from worker.config import WorkerConfig  # noqa: E402 - after the check above
from worker.jobs import Job, Outcome, OutcomeState  # noqa: E402
from worker.runner import Worker  # noqa: E402

__all__ = ["Job", "Outcome", "OutcomeState", "Worker", "WorkerConfig"]
