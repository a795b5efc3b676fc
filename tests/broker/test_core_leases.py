"""Lease fencing, stream end and grace, reclaim, ping timeout, time limits, poison tasks."""

from __future__ import annotations

from broker.core.model import Hello, LeaseExtension, Phase, Report, StateUpdate, TaskState
from broker.errors import SessionFenced
from tests.broker.core_support import (
    advance,
    connect,
    fail,
    grant,
    make_broker,
    outcome,
    spec,
    taken,
)


def test_a_report_on_a_stale_lease_is_rejected_and_never_overwrites_the_result() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec()).task_id
    first = connect(core, "a", credit=1)
    (old,) = taken(first)
    core.workers.close(first, "network blip")
    advance(core, clock, 3)  # grace passed: requeued
    second = connect(core, "b", credit=1)
    (new,) = taken(second)
    assert new.attempt == 2 and new.lease_id != old.lease_id
    outcome(core, second, new.lease_id)
    core.workers.report(first, Report(outcomes=()))  # nothing to reject
    fail(core, first, old.lease_id)
    assert first.take_outbox().rejections[0][0] == old.lease_id
    assert core.get(task_id).state is TaskState.SUCCESS  # type: ignore[union-attr]


def test_leases_of_an_ended_stream_are_requeued_at_the_front_after_the_grace() -> None:
    core, clock = make_broker()
    lost = core.submit(spec(task_id="lost")).task_id
    core.submit(spec(task_id="behind"))
    session = connect(core, "a", credit=1)
    taken(session)
    core.workers.close(session, "gone")
    advance(core, clock, 1.9)
    assert core.get(lost).phase is Phase.LEASED  # type: ignore[union-attr]
    advance(core, clock, 0.2)
    other = connect(core, "b", credit=1)
    (again,) = taken(other)
    assert again.record.task_id == lost
    assert again.attempt == 2
    assert again.record.retries == 0  # a redelivery is not a retry


def test_a_reconnecting_worker_reclaims_its_held_leases() -> None:
    core, clock = make_broker()
    core.submit(spec())
    session = connect(core, "w1", credit=1)
    (assignment,) = taken(session)
    core.workers.close(session, "blip")
    again, kept = core.workers.open(Hello(worker_id="w1", held_lease_ids=(assignment.lease_id,)))
    assert kept == [assignment.lease_id]
    advance(core, clock, 5)
    outcome(core, again, assignment.lease_id)
    assert assignment.record.state is TaskState.SUCCESS
    # Another worker id cannot steal a lease.
    _, stolen = core.workers.open(Hello(worker_id="w2", held_lease_ids=(assignment.lease_id,)))
    assert stolen == []


def test_a_silent_worker_is_dropped_after_the_ping_timeout_and_its_task_requeued() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec()).task_id
    session = connect(core, "a", credit=1)
    taken(session)
    advance(core, clock, 4)
    core.workers.touch(session)  # a pong
    advance(core, clock, 5)
    assert not session.closed
    advance(core, clock, 1.5)
    assert session.closed
    assert session.take_outbox().drop is not None
    advance(core, clock, 2.5)
    assert core.get(task_id).phase is Phase.QUEUED


def test_an_idle_worker_is_not_judged_by_silence_until_it_gets_work() -> None:
    # Idle workers are not pinged (gRPC keepalive watches their connection), so their silence
    # means nothing; once one holds a task its silence counts from the assignment.
    core, clock = make_broker()
    session = connect(core, "idle")
    advance(core, clock, 60)
    assert not session.closed
    task_id = core.submit(spec()).task_id
    grant(core, session, 1)
    assert taken(session)
    advance(core, clock, 5)
    assert not session.closed
    advance(core, clock, 7)  # a whole ping timeout (6 s) since the assignment
    assert session.closed
    advance(core, clock, 2.5)
    assert core.get(task_id).phase is Phase.QUEUED


def test_a_hung_time_limited_task_is_cancelled_and_fails_at_its_lease_deadline() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec(time_limit_ms=2000)).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    advance(core, clock, 2.5)  # limit 2 s + margin 1 s not reached
    assert assignment.record.phase is Phase.LEASED
    core.workers.touch(session)
    advance(core, clock, 0.6)
    cancel = session.take_outbox().cancels[0]
    assert cancel.lease_ids == [assignment.lease_id] and cancel.terminate
    record = core.get(task_id)
    assert record is not None
    assert record.state is TaskState.FAILURE
    assert record.error is not None and record.error.type == "TimeLimitExceeded"
    assert record.dead_lettered


def test_a_hung_task_with_retries_left_runs_again_like_one_on_a_lost_worker() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec(time_limit_ms=2000, max_retries=1)).task_id
    session = connect(core, credit=2)
    (first,) = taken(session)
    core.workers.touch(session)
    advance(core, clock, 3.1)  # past the limit and the margin: cancelled, and retried at once
    record = core.get(task_id)
    assert record is not None and record.state is TaskState.RETRY and record.retries == 1
    assert record.error is not None and record.error.type == "TimeLimitExceeded"
    outbox = session.take_outbox()
    assert outbox.cancels[0].lease_ids == [first.lease_id]
    (second,) = outbox.assignments  # the worker still has credit for it
    assert second.record is record and second.lease_id != first.lease_id
    core.workers.touch(session)
    advance(core, clock, 3.1)  # hung again, no retries left: it fails for good
    final = core.get(task_id)
    assert final is not None and final.state is TaskState.FAILURE and final.dead_lettered


def test_a_lease_extension_pushes_the_deadline_and_records_progress() -> None:
    core, clock = make_broker()
    core.submit(spec(time_limit_ms=1000))
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    progress = spec().args
    extension = LeaseExtension(assignment.lease_id, 10_000, progress)
    core.workers.report(session, Report(extensions=(extension,)))
    advance(core, clock, 5)
    assert assignment.record.phase is Phase.LEASED
    assert assignment.record.progress == progress
    advance(core, clock, 5.1)
    assert assignment.record.state is TaskState.FAILURE


def test_a_poison_task_that_keeps_killing_workers_is_dead_lettered() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec()).task_id
    for n in range(5):
        session = connect(core, f"w{n}", credit=1)
        assert len(taken(session)) == 1
        core.workers.close(session, "killed")
        advance(core, clock, 3)
    record = core.get(task_id)
    assert record is not None
    assert record.state is TaskState.FAILURE
    assert record.error is not None and record.error.type == "WorkerLost"
    assert record.dead_lettered


def test_returned_leases_are_requeued_without_counting_an_attempt() -> None:
    core, _ = make_broker()
    core.submit(spec())
    session = connect(core, "a", credit=1)
    (assignment,) = taken(session)
    core.workers.drain("shutdown")
    core.workers.report(session, Report(returned=(assignment.lease_id,)))
    core.dispatch()
    other = connect(core, "b", credit=1)
    (again,) = taken(other)
    assert again.attempt == 1


def test_started_ack_and_custom_state_are_visible() -> None:
    core, _ = make_broker()
    task_id = core.submit(spec()).task_id
    session = connect(core, "w9", credit=1)
    (assignment,) = taken(session)
    meta = spec().args
    core.workers.report(
        session,
        Report(
            started=(assignment.lease_id,),
            state_updates=(StateUpdate(assignment.lease_id, "PROGRESS", meta),),
        ),
    )
    record = core.get(task_id)
    assert record is not None
    assert record.state is TaskState.STARTED
    assert record.custom_state == "PROGRESS" and record.result == meta
    assert record.worker_id == "w9"
    grant(core, session, 1)


def test_a_custom_state_does_not_outlive_the_attempt_that_set_it() -> None:
    core, _ = make_broker()
    task_id = core.submit(spec()).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    update = StateUpdate(assignment.lease_id, "PROGRESS", spec().args)
    core.workers.report(session, Report(state_updates=(update,)))
    fail(core, session, assignment.lease_id, retry=True)
    record = core.get(task_id)
    assert record is not None and record.state is TaskState.RETRY
    assert record.custom_state == "" and record.result is None


def test_a_returned_lease_goes_at_once_to_another_session_with_credit() -> None:
    core, _ = make_broker()
    core.submit(spec())
    busy = connect(core, "busy", credit=1)
    idle = connect(core, "idle", credit=0)
    (assignment,) = taken(busy)
    grant(core, idle, 1)
    assert taken(idle) == []
    core.workers.report(busy, Report(returned=(assignment.lease_id,)))
    (again,) = taken(idle)
    assert again.record is assignment.record and again.attempt == 1


def test_a_report_that_withdraws_credit_keeps_only_the_credit_it_grants() -> None:
    core, _ = make_broker()
    session = connect(core, "a", credit=5)
    core.workers.report(session, Report(credit=1, withdraw_credit=True))
    assert session.credit == 1
    core.submit(spec())
    core.submit(spec())
    core.dispatch()
    assert len(taken(session)) == 1  # the withdrawn credit brings nothing more


def test_a_second_session_of_a_live_worker_id_fences_the_first_and_keeps_its_leases() -> None:
    core, clock = make_broker()
    core.submit(spec())
    core.submit(spec())
    old = connect(core, "w1", credit=2)
    held, dropped = taken(old)
    # The worker reconnects before the broker noticed its old stream is dead.
    new, kept = core.workers.open(Hello(worker_id="w1", held_lease_ids=(held.lease_id,)))
    assert kept == [held.lease_id]
    assert old.closed and not new.closed
    fence = old.take_outbox().drop
    assert isinstance(fence, SessionFenced) and "w1" in str(fence)
    # A report on the fenced session is rejected; the new one's counts.
    outcome(core, old, held.lease_id)
    assert held.record.phase is Phase.LEASED
    outcome(core, new, held.lease_id)
    assert held.record.state is TaskState.SUCCESS
    # What the new session did not name is requeued after the grace period, as for a lost one.
    advance(core, clock, 5)
    assert dropped.record.phase is Phase.QUEUED and dropped.record.redeliveries == 1


def test_a_lease_another_broker_took_over_is_let_go_without_a_requeue() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec()).task_id
    session = connect(core, "a", credit=1)
    (assignment,) = taken(session)
    core.workers.close(session, "the worker moved to another broker")
    assert core.lifecycle.disown(task_id)
    advance(core, clock, 3)  # the grace passes with nothing left to requeue
    assert core.get(task_id) is None and core.lifecycle.unfinished == 0
    assert [stats.leased for stats in core.queue_stats()] == [0]
    fail(core, session, assignment.lease_id)  # a late report is rejected, not applied
    assert session.take_outbox().rejections[0][0] == assignment.lease_id
