"""The worker's cycle-collector settings (run in a fresh interpreter: they are process-wide)."""

from __future__ import annotations

from tests.support import run_python
from worker.collector import YOUNG_THRESHOLD

PROBE = """
import gc
from worker.collector import tune_collector
before = gc.get_threshold()
tune_collector()
after = gc.get_threshold()
print(before[1:] == after[1:], after[0], gc.get_freeze_count() > 1000)
"""


def test_everything_alive_is_frozen_and_young_collections_are_rarer() -> None:
    completed = run_python("-c", PROBE)
    assert completed.stdout.split() == ["True", str(YOUNG_THRESHOLD), "True"], completed.stderr
