"""Dispatch gates: global rate limits per task name and concurrency limits per key.

Both hold across every worker of the broker, unlike Celery's per-worker rate limits.

* A **rate gate** (task name -> tasks per second) lets one task through per ``1/rate``
  seconds: a token bucket of capacity one, Celery's shape, so a limit is never exceeded in a
  burst. A timer late by less than one interval keeps the schedule (no drift from event-loop
  lag); after a longer idle spell the schedule restarts from now, so idleness earns no burst.
* A **slot gate** (concurrency key -> leases held) lets a task through while fewer than its
  ``concurrency_limit`` leases of the same key are held. A lease ending any way (outcome,
  retry, requeue after a worker died, revoke, time limit) frees the slot.

A task the dispatcher pops that a gate holds back is *parked* on that gate, in order, and
stays QUEUED (a restart puts it back in its queue from the journal: parking is never
persisted). When the gate opens (the rate timer rings, a slot frees) the oldest parked task
goes back to the front of its ready queue and dispatch takes it as usual. Nothing polls: a
rate gate arms one timer for its next token, and only while it has parked tasks.

Brokers sharing a database (broker.cluster) hold a rate limit together: a :class:`Budget`
then hands out the tokens. A rate gate with parked tasks asks it for up to a second's worth;
the budget reserves them in the database (start times spaced by ``1/rate`` across every
broker) and gives them back with :meth:`Gates.grant`. A token unused one interval after its
time is dropped, so tokens never bunch into a burst. A concurrency slot is then a slot in the
database, taken for one task at a time: a slot gate with parked tasks asks the budget for a
slot for the oldest (:meth:`Gates.slot_answer`), runs it once granted, asks for the next, and
asks again when any broker frees a slot of its key (:meth:`Gates.slot_freed`); every lease's
end gives its slot back, whichever broker took it.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from broker.core.model import Phase, TaskRecord
from broker.core.timers import Timer, TimerHeap

logger = logging.getLogger(__name__)


class Budget(Protocol):
    """Where rate tokens come from when several brokers share one limit."""

    def ask_tokens(self, name: str, per_second: float, count: int) -> None:
        """Reserve ``count`` tokens of task ``name``; answer with :meth:`Gates.grant`."""

    def ask_slot(self, key: str, limit: int, task_id: str) -> None:
        """Take one of ``key``'s ``limit`` slots for ``task_id``; answer with slot_answer."""

    def free_slot(self, key: str, task_id: str) -> None:
        """Give ``task_id``'s slot of ``key`` back (nothing when it holds none)."""


class _Gate:
    """Tasks parked on one gate, oldest first, and those it reopened.

    ``pending`` holds the ids of reopened tasks dispatch has not taken yet: if one of those
    finishes first (revoked, expired), the next parked task is reopened in its place, so none
    is stranded.
    """

    __slots__ = ("parked", "pending")

    def __init__(self) -> None:
        self.parked: deque[TaskRecord] = deque()
        self.pending: set[str] = set()


class RateGate(_Gate):
    """One task name's global rate limit."""

    __slots__ = ("asking", "interval", "next_at", "per_second", "timer", "tokens")

    def __init__(self, per_second: float, shared: bool = False) -> None:
        super().__init__()
        self.per_second = per_second
        self.interval = 1.0 / per_second
        self.next_at = float("-inf")  # monotonic time of the next token
        self.timer: Timer | None = None
        # With a budget: the monotonic times of the tokens granted, and whether it was asked.
        self.tokens: deque[float] | None = deque() if shared else None
        self.asking = False

    def take(self, now: float) -> bool:
        """Take the token if it is due."""
        tokens = self.tokens
        if tokens is not None:
            while tokens and tokens[0] < now - self.interval:
                tokens.popleft()  # unused in time: spending it now would make a burst
            if tokens and tokens[0] <= now:
                tokens.popleft()
                return True
            return False
        if now < self.next_at:
            return False
        late = now - self.next_at
        self.next_at = (self.next_at if late < self.interval else now) + self.interval
        return True


class SlotGate(_Gate):
    """One concurrency key's held leases."""

    __slots__ = ("acquired", "asking", "freed", "held", "key")

    def __init__(self, key: str, shared: bool = False) -> None:
        super().__init__()
        self.key = key
        self.held = 0
        # With a budget: the tasks holding a slot in the database, the task a slot is being
        # asked for, and whether a slot was freed while asking (a refusal then asks again).
        self.acquired: set[str] | None = set() if shared else None
        self.asking: str | None = None
        self.freed = False

    @property
    def idle(self) -> bool:
        """Holding nothing and waiting for nothing: the gate can go."""
        return not (self.held or self.parked or self.pending or self.acquired or self.asking)


def concurrency_key(record: TaskRecord) -> str:
    """The key a concurrency-limited task counts against: its own key, else its task name."""
    return record.spec.concurrency_key or record.spec.name


class Gates:
    """Every rate and slot gate of one broker.

    Args:
        monotonic: The clock's monotonic reading.
        timers: The broker's timer heap (a rate gate's next token).
        reopen: Puts a parked task back at the front of its ready queue.
    """

    def __init__(
        self,
        monotonic: Callable[[], float],
        timers: TimerHeap,
        reopen: Callable[[TaskRecord], None],
    ) -> None:
        self._monotonic = monotonic
        self._timers = timers
        self._reopen = reopen
        self.rates: dict[str, RateGate] = {}
        # Rates as workers declare them (the latest hello wins), and an operator's overrides
        # (app.control.rate_limit), which win over them until reset.
        self.declared_rates: dict[str, float] = {}
        self.rate_overrides: dict[str, float] = {}
        self.slots: dict[str, SlotGate] = {}
        # True once any gate exists: the dispatcher's hot path asks nothing more until then.
        self.active = False
        # Hands out rate tokens when brokers share a database; None: this broker's own clock.
        self.budget: Budget | None = None

    # -- configuration -----------------------------------------------------------------------

    def share(self, budget: Budget) -> None:
        """Take rate tokens and concurrency slots from ``budget`` (brokers sharing a database).

        Dispatch then asks the gates about every task: even the first task of a concurrency
        key needs a slot from the budget.
        """
        self.budget = budget
        self.active = True

    def declare_rate(self, name: str, per_second: float) -> None:
        """A worker declares task ``name``'s limit (0: none); an override still wins."""
        self.declared_rates[name] = per_second
        if name not in self.rate_overrides:
            self._set_rate(name, per_second)

    def override_rate(self, name: str, per_second: float | None) -> None:
        """An operator's limit for task ``name`` (0: none), or None to drop the override."""
        if per_second is None:
            self.rate_overrides.pop(name, None)
            self._set_rate(name, self.declared_rates.get(name, 0.0))
        else:
            self.rate_overrides[name] = per_second
            self._set_rate(name, per_second)

    def _set_rate(self, name: str, per_second: float) -> None:
        """Limit task ``name`` to ``per_second`` across all workers (0: no limit)."""
        gate = self.rates.get(name)
        if gate is not None and gate.per_second == per_second:
            return
        if gate is not None and gate.timer is not None:
            gate.timer.cancel()
        if per_second <= 0:
            if gate is not None:
                del self.rates[name]
                for record in reversed(gate.parked):  # front pushes: the oldest ends up first
                    if record.phase is Phase.QUEUED:
                        self._reopen(record)
                logger.info("rate limit removed task=%s", name)
            return
        replacement = RateGate(per_second, shared=self.budget is not None)
        if gate is not None:
            # The new interval counts from the last token given.
            replacement.next_at = gate.next_at - gate.interval + replacement.interval
            replacement.parked = gate.parked
            replacement.pending = gate.pending
        self.rates[name] = replacement
        self.active = True
        self._arm(replacement, name)
        logger.info("rate limit task=%s rate=%g/s", name, per_second)

    def grant(self, name: str, starts: Sequence[float]) -> None:
        """The budget's answer: tokens of task ``name`` at monotonic times ``starts``.

        No tokens (the budget could not reserve any) lets the gate ask again.
        """
        gate = self.rates.get(name)
        if gate is None or gate.tokens is None:
            return
        gate.asking = False
        gate.tokens.extend(starts)
        self._arm(gate, name)

    def rate_of(self, name: str) -> float:
        """Task ``name``'s limit in tasks per second; 0.0 when it has none."""
        gate = self.rates.get(name)
        return gate.per_second if gate is not None else 0.0

    # -- dispatch ----------------------------------------------------------------------------

    def admit(self, record: TaskRecord) -> bool:
        """True when ``record`` may be leased now (its token is then taken).

        Otherwise it is parked on the gate that holds it back, and comes back to its queue
        when that gate opens. The caller leases an admitted task at once, which takes its slot
        (:meth:`leased`).
        """
        spec = record.spec
        slot: SlotGate | None = None
        if spec.concurrency_limit:
            slot = self._slot(concurrency_key(record))
            if slot.acquired is not None:
                if record.task_id not in slot.acquired:
                    self._park(slot, record)
                    self._ask_slot(slot)
                    return False
            elif slot.held >= spec.concurrency_limit:
                self._park(slot, record)
                return False
        rate = self.rates.get(spec.name)
        if rate is not None:
            if not rate.take(self._monotonic()):
                self._park(rate, record)
                self._arm(rate, spec.name)
                return False
            rate.pending.discard(record.task_id)
            self._arm(rate, spec.name)
        if slot is not None:
            slot.pending.discard(record.task_id)
        return True

    def leased(self, record: TaskRecord) -> None:
        """A lease of a concurrency-limited task began (assigned, or restored after a restart)."""
        self._slot(concurrency_key(record)).held += 1

    def released(self, record: TaskRecord) -> None:
        """A lease of a concurrency-limited task ended: free its slot for the oldest parked."""
        key = concurrency_key(record)
        slot = self.slots.get(key)
        if slot is None:
            return
        slot.held -= 1
        if slot.acquired is not None:
            # Always: a lease taken over from a dead broker holds a slot this one never took.
            self._free(slot, record.task_id)
        self._reopen_next(slot)
        if slot.idle:
            del self.slots[key]  # keys are user data: hold none that is idle

    def dropped(self, record: TaskRecord) -> None:
        """A queued task finished without running (revoked, expired, purged), or left."""
        for gate in self._gates_of(record):
            if isinstance(gate, SlotGate) and gate.acquired and record.task_id in gate.acquired:
                self._free(gate, record.task_id)
            if record.task_id in gate.pending:
                gate.pending.discard(record.task_id)
                self._reopen_next(gate)

    def slot_answer(self, key: str, task_id: str, granted: bool) -> None:
        """The budget's answer to :meth:`Budget.ask_slot`."""
        slot = self.slots.get(key)
        if slot is None or slot.acquired is None or slot.asking != task_id:
            if granted and self.budget is not None:
                self.budget.free_slot(key, task_id)
            return
        slot.asking = None
        freed, slot.freed = slot.freed, False
        if granted:
            record = _take_parked(slot, task_id)
            if record is None:  # finished or gone meanwhile
                self._free(slot, task_id)
            else:
                slot.acquired.add(task_id)
                slot.pending.add(task_id)
                self._reopen(record)
        if granted or freed:
            self._ask_slot(slot)  # another slot may be free
        if slot.idle:
            del self.slots[key]

    def slot_freed(self, key: str) -> None:
        """A broker gave a slot of ``key`` back: the oldest task parked for it may take it."""
        slot = self.slots.get(key)
        if slot is not None and slot.acquired is not None:
            if slot.asking is not None:
                slot.freed = True
            else:
                self._ask_slot(slot)

    def parked_by_queue(self) -> Counter[str]:
        """Tasks parked on any gate, by queue (still QUEUED, so counted in its depth)."""
        return Counter(
            record.spec.queue
            for gate in self._all()
            for record in gate.parked
            if record.phase is Phase.QUEUED
        )

    def drain(self, queue: str) -> list[TaskRecord]:
        """Take every live parked task of ``queue`` off its gate (a purge)."""
        drained: list[TaskRecord] = []
        for gate in self._all():
            kept: deque[TaskRecord] = deque()
            for record in gate.parked:
                if record.phase is Phase.QUEUED:
                    (drained if record.spec.queue == queue else kept).append(record)
            gate.parked = kept
        return drained

    # -- internals ---------------------------------------------------------------------------

    def _slot(self, key: str) -> SlotGate:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = SlotGate(key, shared=self.budget is not None)
            self.active = True
        return slot

    def _ask_slot(self, slot: SlotGate) -> None:
        """Ask the budget for a slot for the oldest task parked on ``slot``, one at a time."""
        if slot.asking is not None or self.budget is None:
            return
        parked = slot.parked
        while parked and parked[0].phase is not Phase.QUEUED:
            parked.popleft()  # revoked or expired while parked
        if parked:
            oldest = parked[0]
            slot.asking = oldest.task_id
            self.budget.ask_slot(slot.key, oldest.spec.concurrency_limit, oldest.task_id)

    def _free(self, slot: SlotGate, task_id: str) -> None:
        if slot.acquired is not None:
            slot.acquired.discard(task_id)
        if self.budget is not None:
            self.budget.free_slot(slot.key, task_id)

    def _all(self) -> Iterable[_Gate]:
        yield from self.rates.values()
        yield from self.slots.values()

    def _gates_of(self, record: TaskRecord) -> Iterable[_Gate]:
        rate = self.rates.get(record.spec.name)
        if rate is not None:
            yield rate
        if record.spec.concurrency_limit:
            slot = self.slots.get(concurrency_key(record))
            if slot is not None:
                yield slot

    def _park(self, gate: _Gate, record: TaskRecord) -> None:
        if record.task_id in gate.pending:
            gate.pending.discard(record.task_id)
            gate.parked.appendleft(record)  # reopened but beaten to it: keep its place
        else:
            gate.parked.append(record)
        # Reopened by another gate but held back here: that gate's opening goes to the next.
        for other in self._gates_of(record):
            if other is not gate and record.task_id in other.pending:
                other.pending.discard(record.task_id)
                self._reopen_next(other)

    def _arm(self, gate: RateGate, name: str) -> None:
        if gate.timer is not None or not gate.parked or gate.pending:
            return
        tokens = gate.tokens
        if tokens is None:
            due = gate.next_at
        elif tokens:
            due = tokens[0]
        else:
            if not gate.asking and self.budget is not None:
                gate.asking = True
                wanted = min(len(gate.parked), max(1, int(gate.per_second)))
                self.budget.ask_tokens(name, gate.per_second, wanted)
            return
        gate.timer = self._timers.schedule(due, lambda: self._token_due(gate))

    def _token_due(self, gate: RateGate) -> None:
        gate.timer = None
        # One task per token: once dispatch leases it, admit() arms the timer for the next.
        self._reopen_next(gate)

    def _reopen_next(self, gate: _Gate) -> None:
        if isinstance(gate, SlotGate) and gate.acquired is not None:
            self._ask_slot(gate)  # a parked task runs only once it holds a slot
            return
        parked = gate.parked
        while parked:
            record = parked.popleft()
            if record.phase is Phase.QUEUED:  # not revoked or expired while parked
                gate.pending.add(record.task_id)
                self._reopen(record)
                return


def _take_parked(gate: _Gate, task_id: str) -> TaskRecord | None:
    """Take the live task ``task_id`` off ``gate``'s parked tasks; None when not there."""
    for index, record in enumerate(gate.parked):
        if record.task_id == task_id:
            del gate.parked[index]
            return record if record.phase is Phase.QUEUED else None
    return None
