"""Throughput, latency and per-queue rates for the dashboard, counted from the events stream.

One bucket per second for the last :data:`HISTORY_SECONDS`: tasks accepted, succeeded and
failed, and a bounded sample of runtimes for percentiles. Per-queue rates average the last
:data:`RATE_WINDOW` seconds. It is an events listener, so it runs on the broker's loop and
costs a few dictionary updates per event; counting starts when the HTTP port opens.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field

from broker.service.events import BrokerEvent

HISTORY_SECONDS = 300
RATE_WINDOW = 60
# Runtimes kept per second for the percentiles (a uniform sample past this many).
SAMPLES_PER_SECOND = 256
# Queue names are chosen by producers: past this many in one second the rest share one name.
MAX_QUEUES_PER_SECOND = 1_000
OTHER_QUEUES = "(other)"
_DONE = frozenset(("succeeded", "failed"))


@dataclass(slots=True)
class Second:
    """What happened in one second."""

    at: int
    accepted: int = 0
    succeeded: int = 0
    failed: int = 0
    finished_seen: int = 0  # finished tasks with a runtime, sampled or not
    runtimes: list[float] = field(default_factory=list)
    queued_in: Counter[str] = field(default_factory=Counter)
    done_in: Counter[str] = field(default_factory=Counter)

    def count_queue(self, counter: Counter[str], queue: str) -> None:
        """Count one task of ``queue`` in ``counter``, bounded in names."""
        if queue not in counter and len(counter) >= MAX_QUEUES_PER_SECOND:
            queue = OTHER_QUEUES
        counter[queue] += 1

    def sample(self, runtime: float, rng: random.Random) -> None:
        """Keep ``runtime`` in a uniform sample of this second's runtimes."""
        self.finished_seen += 1
        if len(self.runtimes) < SAMPLES_PER_SECOND:
            self.runtimes.append(runtime)
            return
        slot = rng.randrange(self.finished_seen)
        if slot < SAMPLES_PER_SECOND:
            self.runtimes[slot] = runtime


class TaskStats:
    """The last minutes of task traffic, second by second (an events listener)."""

    def __init__(self) -> None:
        self._seconds: deque[Second] = deque(maxlen=HISTORY_SECONDS)
        self._rng = random.Random()

    def on_event(self, event: BrokerEvent) -> None:
        """Count ``event``."""
        kind = event.kind
        if kind == "accepted":
            second = self._second(int(event.at))
            second.accepted += 1
            second.count_queue(second.queued_in, event.queue)
        elif kind in _DONE:
            second = self._second(int(event.at))
            if kind == "succeeded":
                second.succeeded += 1
            else:
                second.failed += 1
            second.count_queue(second.done_in, event.queue)
            if event.runtime > 0:
                second.sample(event.runtime, self._rng)

    def series(self, now: float) -> list[dict[str, float]]:
        """One point per second of the last :data:`HISTORY_SECONDS` up to ``now``, oldest first.

        Each has ``at`` (epoch seconds), ``accepted``, ``succeeded``, ``failed`` and, when a
        task finished then, ``p50`` and ``p95`` runtimes in seconds.
        """
        by_second = {second.at: second for second in self._seconds}
        end = int(now)
        points: list[dict[str, float]] = []
        for at in range(end - HISTORY_SECONDS + 1, end + 1):
            second = by_second.get(at)
            point: dict[str, float] = {"at": at, "accepted": 0, "succeeded": 0, "failed": 0}
            if second is not None:
                point.update(
                    accepted=second.accepted, succeeded=second.succeeded, failed=second.failed
                )
                if second.runtimes:
                    ordered = sorted(second.runtimes)
                    point["p50"] = _percentile(ordered, 0.50)
                    point["p95"] = _percentile(ordered, 0.95)
            points.append(point)
        return points

    def queue_rates(self, now: float) -> dict[str, tuple[float, float]]:
        """Per queue: tasks accepted and finished per second over the last :data:`RATE_WINDOW`."""
        since = int(now) - RATE_WINDOW
        queued: Counter[str] = Counter()
        done: Counter[str] = Counter()
        for second in self._seconds:
            if second.at > since:
                queued.update(second.queued_in)
                done.update(second.done_in)
        return {
            name: (queued[name] / RATE_WINDOW, done[name] / RATE_WINDOW)
            for name in queued.keys() | done.keys()
        }

    def _second(self, at: int) -> Second:
        seconds = self._seconds
        if seconds and seconds[-1].at == at:
            return seconds[-1]
        if seconds and seconds[-1].at > at:  # a late event (the wall clock stepped back)
            for second in reversed(seconds):
                if second.at == at:
                    return second
            return seconds[-1]
        second = Second(at)
        seconds.append(second)
        return second


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
