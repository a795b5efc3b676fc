"""The outgoing report buffer: everything the worker has to tell the broker, sent as one Report.

Whatever happens during one turn of the event loop (tasks started, outcomes, heartbeats,
custom states, returned leases, credit) is collected here and flushed as ONE Report on the
next turn: a lone task still goes out at once (flush when idle, never wait to fill a batch),
and a burst of completions shares a message. When the last running task finishes, the worker
flushes in the same turn (`flush_now`): nothing else can join that Report. While the worker
is busy (`busy()`: it holds prefetched tasks that wait for a slot, so more outcomes are moments
away) the flush waits up to `busy_delay` (2 ms) or until `busy_batch` outcomes are in: under a
stream of tiny tasks one Report then carries tens of outcomes instead of one or two, and gRPC's
per-message cost (most of the worker's CPU per task) is paid once for all of them.

A started ack is the one item that never hurries a flush: alone, it waits up to
`STARTED_DELAY` (5 ms) for its task's outcome. A short task's start and end then travel in one
Report instead of two; on a lone round trip the second message cost the worker and the broker
CPU exactly while the task ran, and delayed the outcome behind its own write. A long task's
STARTED state reaches the broker at most 5 ms late.

A Report written just before the connection breaks may never arrive, so the worker keeps
every outcome it sent until the broker acknowledges it (OutcomeAcks, sent once the outcome is
recorded) or rejects its lease. After a reconnect their leases go in `Hello.held_lease_ids`, and
those the broker still holds (it never took the outcome) are sent again; the rest are forgotten.
At most `MAX_UNACKNOWLEDGED` are kept, the oldest dropped first with a warning, so a broker that
stops acknowledging cannot grow the worker without bound. A broker that predates acks
(`Welcome.acks_outcomes` false) gets today's older rule: sent outcomes are kept for
`keep_sent_for` seconds, since an outcome it did not receive means it received nothing after it
either (the stream is ordered), so it gives the session up within its ping timeout, after which
the outcome could not be accepted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable

from worker.codec import ReportBatch
from worker.jobs import Heartbeat, Outcome, StateUpdate, TaskEvent

logger = logging.getLogger(__name__)

# Sent outcomes kept at most until the broker acknowledges them. In-flight work bounds them
# (concurrency plus prefetch) while the broker answers; this bounds a broker that does not.
MAX_UNACKNOWLEDGED = 10_000
# Until the broker's Welcome says how long its ping timeout is (its default is 6 s).
DEFAULT_KEEP_SENT_FOR = 12.0
# How long a busy worker lets outcomes gather, and how many make a Report worth sending now.
BUSY_DELAY = 0.002
BUSY_BATCH = 100
# How long a started ack alone waits for something to share its Report (its outcome, ideally).
STARTED_DELAY = 0.005


def _never_busy() -> bool:
    return False


class ReportBuffer:
    """Collects report items and asks for one flush per event-loop turn."""

    def __init__(self, flush: Callable[[], None], busy: Callable[[], bool] = _never_busy) -> None:
        """Create an empty buffer.

        Args:
            flush: Called on the next loop turn after items arrive (see the module docstring
                for when a busy worker waits a little longer).
            busy: Whether more outcomes are about to follow (the flush may wait for them).
        """
        self._flush = flush
        self._busy = busy
        self._scheduled: asyncio.Handle | None = None
        self._due = 0.0  # loop time the scheduled flush runs at
        self._credit = 0
        self._started: list[str] = []
        self._outcomes: dict[str, Outcome] = {}
        # Only the latest heartbeat and custom state of a lease matter; older ones are replaced.
        self._heartbeats: dict[str, Heartbeat] = {}
        self._state_updates: dict[str, StateUpdate] = {}
        self._returned: list[str] = []
        self._withdraw = False
        # Sent outcomes by lease, with the loop time they were taken for sending ...
        self._unconfirmed: dict[str, tuple[float, Outcome]] = {}
        # ... and, for a broker that does not acknowledge outcomes, the order they expire in.
        # Not the dict's own order: a dict whose oldest entries keep being deleted scans past
        # the deleted slots to find its first entry, which made every Report cost time
        # proportional to the outcomes of the last 12 s.
        self._sent_order: deque[tuple[float, str]] = deque()
        self.keep_sent_for = DEFAULT_KEEP_SENT_FOR
        # Set from each Welcome: whether this broker sends OutcomeAcks.
        self.acks_outcomes = False

    def add_credit(self, slots: int) -> None:
        """Grant `slots` more credit."""
        if slots:
            self._credit += slots
            self._touch()

    def reset_credit(self, slots: int) -> None:
        """Replace pending credit (a new session starts from zero credit at the broker)."""
        self._credit = slots
        self._touch()

    def withdraw_credit(self) -> None:
        """Ask the broker to drop the credit it holds for this worker (a prefetch hand-back).

        Credit gathered for this Report so far is dropped as well: the broker restarts from
        zero, and only credit added after this call reaches it.
        """
        self._credit = 0
        self._withdraw = True
        self._touch()

    def add_started(self, lease_id: str) -> None:
        """Acknowledge that a lease's task has started."""
        self._started.append(lease_id)
        self._flush_within(STARTED_DELAY)

    def add_outcome(self, outcome: Outcome, credit: int) -> None:
        """Report a finished attempt, returning `credit` slots with it."""
        self._outcomes[outcome.lease_id] = outcome
        self._heartbeats.pop(outcome.lease_id, None)
        self._state_updates.pop(outcome.lease_id, None)
        self._credit += credit
        self._touch()

    def add_event(self, event: TaskEvent) -> None:
        """Report a heartbeat or custom state from a running task."""
        if isinstance(event, Heartbeat):
            self._heartbeats[event.lease_id] = event
        else:
            self._state_updates[event.lease_id] = event
        self._touch()

    def add_returned(self, lease_id: str) -> None:
        """Hand back a lease that was never started."""
        self._returned.append(lease_id)
        self._touch()

    def pending_outcome_leases(self) -> list[str]:
        """Leases whose outcome is not known to have reached the broker (held on reconnect)."""
        return [
            *self._outcomes,
            *(lease for lease in self._unconfirmed if lease not in self._outcomes),
        ]

    def acknowledge(self, lease_ids: Iterable[str]) -> None:
        """The broker took these outcomes (recorded, or rejected): forget them."""
        unconfirmed = self._unconfirmed
        for lease_id in lease_ids:
            unconfirmed.pop(lease_id, None)

    def resend_unconfirmed(self, kept_lease_ids: Collection[str]) -> int:
        """After a reconnect: send again the outcomes whose leases the broker kept.

        A kept lease is one the broker still holds, so it never applied that outcome. The rest
        were applied (or the lease moved on) and are forgotten.

        Returns:
            How many outcomes go out again.
        """
        kept = set(kept_lease_ids)
        resent = 0
        for lease_id, (_, outcome) in self._unconfirmed.items():
            if lease_id in kept and lease_id not in self._outcomes:
                self._outcomes[lease_id] = outcome
                resent += 1
        self._unconfirmed.clear()
        self._sent_order.clear()
        if resent:
            self._touch()
        return resent

    def take(self) -> ReportBatch | None:
        """Empty the buffer into one batch; None when there is nothing to say."""
        batch = ReportBatch(
            credit=self._credit,
            started=self._started,
            outcomes=list(self._outcomes.values()),
            heartbeats=list(self._heartbeats.values()),
            state_updates=list(self._state_updates.values()),
            returned=self._returned,
            withdraw_credit=self._withdraw,
        )
        self._remember_sent(batch.outcomes or [])
        self._withdraw = False
        self._credit = 0
        self._started = []
        self._outcomes = {}
        self._heartbeats = {}
        self._state_updates = {}
        self._returned = []
        empty = not (batch.credit or batch.started or batch.outcomes or batch.heartbeats)
        if empty and not (batch.state_updates or batch.returned or batch.withdraw_credit):
            return None
        return batch

    def _remember_sent(self, outcomes: list[Outcome]) -> None:
        if self.acks_outcomes:
            for outcome in outcomes:
                self._unconfirmed[outcome.lease_id] = (0.0, outcome)
            if len(self._unconfirmed) > MAX_UNACKNOWLEDGED:
                self._forget_oldest(len(self._unconfirmed) - MAX_UNACKNOWLEDGED)
            return
        now = asyncio.get_running_loop().time()
        for outcome in outcomes:
            self._unconfirmed[outcome.lease_id] = (now, outcome)
            self._sent_order.append((now, outcome.lease_id))
        horizon = now - self.keep_sent_for
        order = self._sent_order
        while order and order[0][0] <= horizon:
            sent_at, lease_id = order.popleft()
            entry = self._unconfirmed.get(lease_id)
            if entry is not None and entry[0] == sent_at:  # not sent again since
                del self._unconfirmed[lease_id]

    def _forget_oldest(self, count: int) -> None:
        for lease_id in list(itertools.islice(self._unconfirmed, count)):
            del self._unconfirmed[lease_id]
        logger.warning(
            "forgot the %d oldest outcomes the broker has not acknowledged (at most %d are "
            "kept); if it never received them, their tasks run again",
            count,
            MAX_UNACKNOWLEDGED,
        )

    def _touch(self) -> None:
        """Flush on the next loop turn, or within BUSY_DELAY while more outcomes are coming."""
        busy = len(self._outcomes) < BUSY_BATCH and self._busy()
        self._flush_within(BUSY_DELAY if busy else 0.0)

    def _flush_within(self, wait: float) -> None:
        """Make sure a flush runs within `wait` seconds (0: on the next loop turn)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + wait
        if self._scheduled is not None:
            if self._due <= due:
                return  # the flush already scheduled comes soon enough
            self._scheduled.cancel()
        self._due = due
        if wait > 0:
            self._scheduled = loop.call_later(wait, self._fire)
        else:
            self._scheduled = loop.call_soon(self._fire)

    def flush_now(self) -> None:
        """Flush at once instead of on the next loop turn: nothing more is coming this turn."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._flush()

    def _fire(self) -> None:
        self._scheduled = None
        self._flush()
