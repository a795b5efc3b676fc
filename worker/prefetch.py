"""Adaptive prefetch: how much credit a worker grants, and the jobs it holds before they start.

DESIGN promises that no task sits behind a long one on a busy worker, which pure free-slot
credit keeps (the broker never assigns more than there are free slots). But then every stream
message carries one or two tasks, and a burst of tiny tasks pays the full per-message cost of
gRPC on both sides for each task. So the worker grants its free slots PLUS a small buffer sized
to what it finishes in a short window (`window`, 100 ms): `extra = min(max_extra, rate *
window)`, from a moving estimate of its own completion rate.

* Long tasks finish rarely, so the rate is low and `extra` is zero: exactly free-slot credit.
* A burst of tiny tasks raises the rate, and assignments arrive in batches of tens to hundreds.
* Backstop: when the oldest buffered job has waited longer than `hold` (the estimate was wrong:
  a long task arrived behind short ones), every buffered job is handed back to the broker, which
  gives it to another worker, and `extra` stays zero until a running task finishes. Credit
  already granted cannot be taken back (the contract has no field for it), so while held back,
  whatever the broker still assigns beyond free slots goes straight back (`held_back`).

Credit accounting is exact: `broker_credit` is what the broker holds for this session (granted
minus assigned). A new session starts from zero at the broker, and so does it here.
"""

from __future__ import annotations

import logging
import math
from collections import deque

from worker.jobs import Job

logger = logging.getLogger(__name__)

# Prefetch credit is granted in chunks of at least this share of the buffer target, so that the
# broker answers with one message carrying many tasks instead of one message per finished task.
_CHUNK_SHARE = 0.5
# How much faster the completion-rate estimate rises than it falls.
_RISE_SPEEDUP = 5.0


class CompletionRate:
    """A moving estimate of completions per second (exponentially weighted over `tau`).

    The estimate rises five times faster than it falls. Prefetch credit follows the estimate and
    the completion rate follows the credit, so a symmetric average made every burst of tiny tasks
    crawl for about a second before the buffer was deep enough (measured: the first 20,000-task
    burst after a pause ran at ~10k tasks/s instead of ~12k). Falling slowly keeps a short lull
    from emptying the buffer in the middle of a burst.
    """

    def __init__(self, tau: float = 0.5, sample: float = 0.05) -> None:
        """Estimate over about `tau` seconds (a fifth when rising), sampled >= `sample` s."""
        self._tau = tau
        self._sample = sample
        self._rate = 0.0
        self._count = 0
        self._since: float | None = None

    def record(self, now: float, count: int = 1) -> None:
        """Count `count` completions at loop time `now`."""
        if self._since is None:
            self._since = now
        self._count += count
        self._roll(now)

    def per_second(self, now: float) -> float:
        """The estimate at `now`; a quiet spell pulls it down even with nothing recorded."""
        self._roll(now)
        return self._rate

    def _roll(self, now: float) -> None:
        if self._since is None:
            return
        elapsed = now - self._since
        if elapsed < self._sample:
            return
        # Weighted by the time the sample covers: a long idle spell mostly replaces the past.
        measured = self._count / elapsed
        tau = self._tau / _RISE_SPEEDUP if measured > self._rate else self._tau
        weight = 1.0 - math.exp(-elapsed / tau)
        self._rate += weight * (measured - self._rate)
        self._count = 0
        self._since = now


class Prefetch:
    """The jobs assigned but not started, and the credit the broker holds for them."""

    def __init__(self, slots: int, max_extra: int, hold: float, window: float = 0.1) -> None:
        """Create an empty buffer.

        Args:
            slots: The pool's execution slots (always granted when free).
            max_extra: The most credit granted beyond free slots (0 disables prefetch).
            hold: How long a buffered job may wait before it is handed back.
            window: How much work, in seconds at the current completion rate, to keep buffered.
        """
        self.slots = slots
        self.max_extra = max_extra
        self.hold = hold
        self.window = window
        self.broker_credit = 0
        self.rate = CompletionRate()
        self._jobs: deque[tuple[float, Job]] = deque()
        self._held_back = False
        self._withdrew = False

    def __len__(self) -> int:
        return len(self._jobs)

    def __bool__(self) -> bool:
        return bool(self._jobs)

    @property
    def jobs(self) -> list[Job]:
        """The buffered jobs, oldest first."""
        return [job for _, job in self._jobs]

    @property
    def lease_ids(self) -> list[str]:
        """The buffered jobs' leases, oldest first."""
        return [job.lease_id for _, job in self._jobs]

    def granted(self, credit: int) -> None:
        """Credit was sent to the broker."""
        self.broker_credit += credit

    def new_session(self) -> None:
        """A new session starts with no credit at the broker."""
        self.broker_credit = 0
        self._withdrew = False

    def withdrawn(self) -> None:
        """The worker asked the broker to drop the credit it held (Report.withdraw_credit)."""
        self.broker_credit = 0
        # Assignments the broker made before it read the withdrawal are still on their way.
        self._withdrew = True

    def assigned(self, job: Job, now: float) -> None:
        """The broker assigned `job` (using one credit); buffer it until a slot is free."""
        if self.broker_credit > 0:
            self.broker_credit -= 1
        elif self._withdrew:
            logger.debug("lease=%s was assigned before the broker read a withdrawal", job.lease_id)
        else:
            logger.warning("the broker assigned lease=%s beyond this worker's credit", job.lease_id)
        self._jobs.append((now, job))

    def push_front(self, job: Job, now: float) -> None:
        """Buffer a job the pool gave back unstarted, first in line (its credit is spent)."""
        self._jobs.appendleft((now, job))

    def pop(self) -> Job | None:
        """The oldest buffered job, removed; None when the buffer is empty."""
        return self._jobs.popleft()[1] if self._jobs else None

    def remove(self, lease_id: str) -> Job | None:
        """Take one buffered job out (e.g. revoked before it started)."""
        for index, (_, job) in enumerate(self._jobs):
            if job.lease_id == lease_id:
                del self._jobs[index]
                return job
        return None

    def take_all(self) -> list[Job]:
        """Empty the buffer (to hand the jobs back)."""
        jobs = [job for _, job in self._jobs]
        self._jobs.clear()
        return jobs

    def keep_only(self, lease_ids: set[str]) -> list[Job]:
        """Drop the buffered jobs whose leases are not in `lease_ids`; returns the dropped."""
        dropped = [job for _, job in self._jobs if job.lease_id not in lease_ids]
        if dropped:
            self._jobs = deque(entry for entry in self._jobs if entry[1].lease_id in lease_ids)
        return dropped

    @property
    def held_back(self) -> bool:
        """Whether prefetch is off since a hold-limit hand-back (until a running task ends)."""
        return self._held_back

    def finished(self, now: float) -> None:
        """A running job finished: count it, and a freed slot lifts the hold-back."""
        self.rate.record(now)
        self._held_back = False

    def oldest_due(self) -> float | None:
        """When the oldest buffered job reaches the hold limit (loop time); None if empty."""
        return self._jobs[0][0] + self.hold if self._jobs else None

    def expire(self, now: float) -> list[Job]:
        """Past the hold limit: hand back every buffered job and stop prefetching for now."""
        due = self.oldest_due()
        if due is None or due > now:
            return []
        self._held_back = True
        return self.take_all()

    def extra(self, now: float) -> int:
        """The credit to keep out beyond free slots, from the completion rate."""
        if self._held_back or self.max_extra <= 0:
            return 0
        return min(self.max_extra, int(self.rate.per_second(now) * self.window))

    def credit_to_grant(self, running: int, now: float) -> int:
        """How much more credit to grant now (0 when what is out is enough).

        Free slots not covered by buffered jobs or broker credit are always granted at once
        (a single task must never wait); prefetch credit goes out in chunks so the broker can
        answer with one large assignment.
        """
        extra = self.extra(now)
        have = running + len(self._jobs) + self.broker_credit
        deficit = self.slots + extra - have
        if deficit <= 0:
            return 0
        if have < self.slots or deficit >= max(1, int(extra * _CHUNK_SHARE)):
            return deficit
        return 0
