"""Dispatch by credit, priorities, FIFO, round-robin, queue preference, revoke of queued tasks."""

from __future__ import annotations

from broker.core.model import Phase, RevokeOutcome, TaskState
from tests.broker.core_support import advance, connect, grant, make_broker, spec, taken


def test_nothing_is_assigned_without_credit_and_never_beyond_it() -> None:
    core, _ = make_broker()
    session = connect(core)
    for _ in range(3):
        core.submit(spec())
    assert taken(session) == []
    grant(core, session, 2)
    assert len(taken(session)) == 2
    assert session.credit == 0
    assert core.queue_stats()[0].ready == 1


def test_higher_priority_runs_first_and_fifo_within_a_priority() -> None:
    core, _ = make_broker()
    ids = [
        core.submit(spec(priority=p, task_id=f"t{i}")).task_id
        for i, p in enumerate([0, 9, 5, 9, 0])
    ]
    session = connect(core, credit=5)
    order = [a.record.task_id for a in taken(session)]
    assert order == [ids[1], ids[3], ids[2], ids[0], ids[4]]


def test_sessions_on_the_same_queue_take_turns() -> None:
    core, _ = make_broker()
    first = connect(core, "a", credit=10)
    second = connect(core, "b", credit=10)
    for _ in range(6):
        core.submit(spec())
    assert len(taken(first)) == 3
    assert len(taken(second)) == 3


def test_a_queue_listed_twice_does_not_give_a_worker_two_turns() -> None:
    core, _ = make_broker()
    greedy = connect(core, "greedy", queues=("default", "default"))
    connect(core, "fair")
    assert core.queue_stats()[0].consumers == 2
    core.workers.close(greedy, "gone")
    assert core.queue_stats()[0].consumers == 1


def test_a_worker_takes_its_queues_in_the_order_it_listed_them() -> None:
    core, _ = make_broker()
    core.submit(spec(queue="low", task_id="low-1"))
    core.submit(spec(queue="high", task_id="high-1"))
    session = connect(core, queues=("high", "low"), credit=1)
    assert [a.record.task_id for a in taken(session)] == ["high-1"]
    grant(core, session, 1)
    assert [a.record.task_id for a in taken(session)] == ["low-1"]


def test_revoked_queued_tasks_never_run_and_depths_stay_right() -> None:
    core, _ = make_broker()
    ids = [core.submit(spec()).task_id for _ in range(4)]
    assert core.revoke(ids[:2], terminate=False, reason="") == [RevokeOutcome.REVOKED] * 2
    assert core.queue_stats()[0].ready == 2
    session = connect(core, credit=10)
    assert sorted(a.record.task_id for a in taken(session)) == sorted(ids[2:])
    assert core.get(ids[0]).state is TaskState.REVOKED  # type: ignore[union-attr]


def test_revoking_running_tasks_sends_each_session_one_cancel_per_kind() -> None:
    core, _ = make_broker()
    ids = [core.submit(spec()).task_id for _ in range(5)]
    first, second = connect(core, "a", credit=3), connect(core, "b", credit=2)
    leases = {a.record.task_id: a.lease_id for s in (first, second) for a in taken(s)}
    assert core.revoke(ids[:4], terminate=True, reason="stop") == [RevokeOutcome.CANCEL_SENT] * 4
    core.revoke(ids[4:], terminate=False, reason="stop")
    by_session = {
        s.hello.worker_id: [(c.lease_ids, c.terminate) for c in s.take_outbox().cancels]
        for s in (first, second)
    }
    assert by_session["a"] == [([leases[i] for i in ids[:3]], True)]
    assert by_session["b"] == [([leases[ids[3]]], True), ([leases[ids[4]]], False)]


def test_a_revoked_task_stays_revoked_when_workers_come_and_go() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec()).task_id
    core.revoke([task_id], terminate=False, reason="")
    for worker in ("a", "b"):
        session = connect(core, worker, credit=5)
        assert taken(session) == []
        core.workers.close(session, "restart")
        clock.advance(10)
        core.fire_timers()
    assert core.get(task_id).phase is Phase.FINISHED  # type: ignore[union-attr]


def test_a_draining_worker_gets_no_more_work() -> None:
    core, _ = make_broker()
    session = connect(core, credit=5)
    core.workers.drain("bye")
    core.submit(spec())
    assert taken(session) == []
    assert session.take_outbox().drain is None  # already taken by the first flush above


def test_queues_nobody_uses_any_more_are_released() -> None:
    core, clock = make_broker()
    connect(core, queues=("consumed",))
    later = core.submit(spec(queue="scheduled", eta=clock.time() + 3600)).task_id
    for index in range(5_000):
        task_id = core.submit(spec(queue=f"one-off-{index}")).task_id
        core.revoke([task_id], terminate=False, reason="")
    names = {stats.name for stats in core.queue_stats()}
    assert len(names) < 2_100
    assert "consumed" in names  # in use: a worker consumes it, empty as it is
    advance(core, clock, 3600)
    record = core.get(later)
    assert record is not None and record.phase is Phase.QUEUED
    assert [s.ready for s in core.queue_stats() if s.name == "scheduled"] == [1]
