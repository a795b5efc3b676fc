"""The result store: expiry per TTL without a timer per result, the bound, forget and revive."""

from __future__ import annotations

from broker.core.broker import Broker
from broker.core.model import TaskState
from tests.broker.core_support import (
    CONFIG,
    advance,
    connect,
    fail,
    make_broker,
    outcome,
    spec,
    taken,
)


def finish(core: Broker, count: int = 1, result_ttl_ms: int = 0) -> list[str]:
    ids = [core.submit(spec(result_ttl_ms=result_ttl_ms)).task_id for _ in range(count)]
    session = connect(core, worker_id=f"w-{ids[0]}", credit=count)
    for assignment in taken(session):
        outcome(core, session, assignment.lease_id)
    return ids


def test_many_results_with_one_ttl_hold_one_timer_and_expire_in_order() -> None:
    core, clock = make_broker(CONFIG.replace(result_ttl=10.0))
    first = finish(core, 1_000)
    advance(core, clock, 5)
    second = finish(core, 1_000)
    assert len(core.lifecycle.timers) < 10  # not one per result
    advance(core, clock, 5)
    assert all(core.get(task_id) is None for task_id in first)
    assert all(core.get(task_id) is not None for task_id in second)
    advance(core, clock, 5)
    assert all(core.get(task_id) is None for task_id in second)
    assert len(core.lifecycle.results) == 0


def test_each_ttl_expires_on_its_own_schedule() -> None:
    core, clock = make_broker(CONFIG.replace(result_ttl=100.0))
    (default,) = finish(core)
    (short,) = finish(core, result_ttl_ms=5_000)
    (longer,) = finish(core, result_ttl_ms=50_000)
    advance(core, clock, 6)
    assert core.get(short) is None
    assert core.get(default) is not None and core.get(longer) is not None
    advance(core, clock, 45)
    assert core.get(longer) is None and core.get(default) is not None
    advance(core, clock, 50)
    assert core.get(default) is None


def test_a_full_store_evicts_the_oldest_finished_whatever_its_ttl() -> None:
    core, clock = make_broker(CONFIG.replace(max_results=2, result_ttl=100.0))
    (oldest,) = finish(core, result_ttl_ms=1_000_000)  # finished first, expires last
    advance(core, clock, 1)
    (middle,) = finish(core, result_ttl_ms=10_000)
    advance(core, clock, 1)
    (newest,) = finish(core)
    assert core.get(oldest) is None
    assert core.get(middle) is not None and core.get(newest) is not None


def test_results_behind_a_forgotten_one_still_expire_on_time() -> None:
    core, clock = make_broker(CONFIG.replace(result_ttl=10.0))
    head, *rest = finish(core, 3)
    assert core.forget([head]) == 1
    advance(core, clock, 9)
    assert all(core.get(task_id) is not None for task_id in rest)
    advance(core, clock, 2)
    assert all(core.get(task_id) is None for task_id in rest)


def test_a_revived_dead_letter_is_kept_for_a_full_ttl_after_it_finishes_again() -> None:
    core, clock = make_broker(CONFIG.replace(result_ttl=10.0, dead_letter_ttl=1_000.0))
    task_id = core.submit(spec()).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    fail(core, session, assignment.lease_id)
    advance(core, clock, 8)
    assert core.requeue_dead_letters([task_id], all=False, queue="") == 1
    again = connect(core, worker_id="w2", credit=1)
    (assignment,) = taken(again)
    outcome(core, again, assignment.lease_id)
    advance(core, clock, 8)  # 16 s after the first finish, 8 s after the second
    record = core.get(task_id)
    assert record is not None and record.state is TaskState.SUCCESS
    advance(core, clock, 3)
    assert core.get(task_id) is None
