"""The broker daemon's cycle-collector policy (in a fresh interpreter: it is process-wide)."""

from __future__ import annotations

from tests.support import run_python

PROBE = """
import gc
from broker import collector

collector.tune_collector()
wanted = (collector.YOUNG_THRESHOLD, collector.MIDDLE_THRESHOLD)
print("thresholds", gc.get_threshold()[:2] == wanted)

# Objects that survive a middle-generation pass are frozen by it.
kept = [[index] for index in range(1000)]
before = gc.get_freeze_count()
gc.collect(1)
print("frozen after a middle pass", gc.get_freeze_count() >= before + 1000)

# A cycle alive at a freeze and dropped afterwards: only the hourly full pass finds it.
class Node:
    pass

node = Node()
node.self = node
gc.collect(1)
del node
print("missed while frozen", gc.collect() == 0)
print("found by the thaw", collector.thaw_and_collect() >= 1)
print("frozen again", gc.get_freeze_count() > 0)
"""


def test_long_lived_objects_are_frozen_and_cycles_among_them_still_go_once_thawed() -> None:
    completed = run_python("-c", PROBE)
    lines = completed.stdout.splitlines()
    assert lines == [
        "thresholds True",
        "frozen after a middle pass True",
        "missed while frozen True",
        "found by the thaw True",
        "frozen again True",
    ], completed.stdout + completed.stderr
