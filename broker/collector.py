"""How the broker keeps Python's cycle collector from stalling it when it holds many tasks.

Every queued task is three objects the collector tracks (its record, its spec and its queue
entry), and the daemon keeps them for as long as the task waits. CPython scans its older
generations again and again, and each pass costs in proportion to what it holds: with a million
tasks queued, a middle-generation pass (every 20 young ones) paused the broker 150-195 ms,
about every 400,000 tasks passing through, and a full pass 450 ms. The scans find nothing: task
records never form cycles (a full collection after 800,000 tasks had run through found no
unreachable object), they only wait in dicts and deques and are freed by reference counting.

So the broker
- collects the young generation every 50,000 net allocations instead of 700 (with the defaults
  a batch submit spent a quarter of its time in the collector) and the middle one every two
  young ones, so a middle pass scans at most ~100,000 objects (~20 ms);
- freezes everything alive after every middle or full pass: frozen objects are never scanned
  again, and are still freed by reference counting the moment nothing refers to them;
- once an hour (``--gc-thaw-interval``), thaws and collects everything, because a frozen object
  that later becomes part of a reference cycle (gRPC and asyncio objects can) is only found by
  such a pass. That one pause is what a full pass costs (~0.45 s with a million tasks queued,
  milliseconds when the broker holds little), once an hour instead of a pause of that order
  every few minutes.

Process-wide, so only the daemon's entry point (`python -m broker serve`) applies it; a broker
embedded in tests or in another program leaves the host's collector alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

logger = logging.getLogger(__name__)

# Net allocations between young-generation collections (CPython's default is 700).
YOUNG_THRESHOLD = 50_000
# Young collections between middle-generation ones (CPython's default is 10).
MIDDLE_THRESHOLD = 2


def tune_collector() -> None:
    """Collect and freeze what start-up left, set the thresholds, freeze after older passes."""
    gc.collect()
    gc.freeze()
    _, _, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, oldest)
    if _freeze_after_older_passes not in gc.callbacks:
        gc.callbacks.append(_freeze_after_older_passes)


def _freeze_after_older_passes(phase: str, info: dict[str, int]) -> None:
    # What survived a middle or full pass is long-lived: it is not worth scanning again.
    if phase == "stop" and info["generation"] > 0:
        gc.freeze()


def thaw_and_collect() -> int:
    """Collect everything once, frozen objects included, then freeze what survives.

    Returns:
        How many unreachable objects the pass found.
    """
    started = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    logger.info(
        "full garbage collection: %d unreachable objects, %.0f ms",
        found,
        1000 * (time.perf_counter() - started),
    )
    return found


async def thaw_periodically(interval: float) -> None:
    """Run :func:`thaw_and_collect` every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        thaw_and_collect()
