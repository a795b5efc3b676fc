"""The timer heap: order, cancellation, and cancelled timers that must not pile up."""

from __future__ import annotations

import functools

from broker.config import BrokerConfig
from broker.core.timers import TimerHeap
from tests.broker.core_support import connect, grant, make_broker, outcome, spec, taken


def test_timers_fire_in_deadline_order_and_cancelled_ones_never() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    heap.schedule(3.0, lambda: fired.append("c"))
    heap.schedule(1.0, lambda: fired.append("a"))
    heap.schedule(2.0, lambda: fired.append("b")).cancel()
    assert heap.next_deadline() == 1.0
    assert heap.fire_due(2.5) == 1
    assert heap.fire_due(3.0) == 1
    assert fired == ["a", "c"]
    assert heap.next_deadline() is None


def test_timers_cancelled_long_before_their_deadline_are_swept_out() -> None:
    heap = TimerHeap()
    fired: list[int] = []
    timers = [heap.schedule(1000.0 + i, functools.partial(fired.append, i)) for i in range(10_000)]
    for timer in timers[:9_000]:
        timer.cancel()
        timer.cancel()  # twice is harmless
    assert len(heap) <= 2 * 1_000
    assert heap.fire_due(100_000.0) == 1_000
    assert fired == list(range(9_000, 10_000))
    assert len(heap) == 0


def test_a_full_result_store_does_not_leave_expiry_timers_behind() -> None:
    # Each evicted result cancels an expiry a day away; the heap must not keep them all.
    core, _ = make_broker(BrokerConfig(max_results=10, result_ttl=86_400.0))
    session = connect(core, credit=1)
    for _ in range(5_000):
        core.submit(spec())
        (assignment,) = taken(session)
        outcome(core, session, assignment.lease_id)
        grant(core, session, 1)
    assert len(core.lifecycle.timers) < 2_100
