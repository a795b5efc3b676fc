"""Retries, eta/countdown, expiry, dedup, result TTL and bound, dead letters, absurd input."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig
from broker.core.events import EventKind, TaskEvent
from broker.core.model import Payload, Phase, TaskState
from broker.errors import InvalidArgument, PayloadTooLarge, QueueFull
from tests.broker.core_support import (
    CONFIG,
    JSON,
    advance,
    connect,
    fail,
    grant,
    make_broker,
    outcome,
    spec,
    taken,
)


def test_a_retry_waits_at_the_broker_without_credit_then_runs_again() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec()).task_id
    session = connect(core, credit=2)
    (first,) = taken(session)
    fail(core, session, first.lease_id, retry=True, retry_countdown_ms=5000, max_retries=3)
    record = core.get(task_id)
    assert record is not None
    assert record.state is TaskState.RETRY and record.phase is Phase.SCHEDULED
    assert record.retries == 1
    assert core.queue_stats()[0].scheduled == 1
    assert taken(session) == []  # waiting takes no credit, even with credit free
    advance(core, clock, 5)
    (second,) = taken(session)
    assert second.attempt == 2 and second.record.retries == 1


def test_retries_beyond_max_retries_fail_for_good_and_are_dead_lettered() -> None:
    core, _ = make_broker()
    task_id = core.submit(spec(max_retries=1)).task_id
    session = connect(core, credit=5)
    (first,) = taken(session)
    fail(core, session, first.lease_id, retry=True, max_retries=10)  # spec's 1 wins
    (second,) = taken(session)
    fail(core, session, second.lease_id, retry=True, max_retries=10)
    record = core.get(task_id)
    assert record is not None
    assert record.state is TaskState.FAILURE and record.dead_lettered
    assert record.error is not None and record.error.message == "boom"
    listed, total = core.dead_letters()
    assert total == 1 and listed[0][0] is record


def test_eta_and_countdown_wait_in_the_timer_heap() -> None:
    core, clock = make_broker(CONFIG.replace(ping_timeout=1000.0))
    later = core.submit(spec(eta=clock.time() + 60)).task_id
    past = core.submit(spec(eta=clock.time() - 60)).task_id  # documented: runs now
    session = connect(core, credit=5)
    assert [a.record.task_id for a in taken(session)] == [past]
    assert core.get(later).due == clock.time() + 60  # type: ignore[union-attr]
    advance(core, clock, 59)
    assert taken(session) == []
    advance(core, clock, 1)
    assert [a.record.task_id for a in taken(session)] == [later]


def test_expired_tasks_never_run_end_revoked_and_say_why() -> None:
    core, clock = make_broker()
    dead_on_arrival = core.submit(spec(expires=clock.time() - 1)).task_id
    queued = core.submit(spec(expires=clock.time() + 10)).task_id
    scheduled = core.submit(spec(eta=clock.time() + 20, expires=clock.time() + 10)).task_id
    advance(core, clock, 11)
    session = connect(core, credit=5)
    assert taken(session) == []
    for task_id in (dead_on_arrival, queued, scheduled):
        record = core.get(task_id)
        assert record is not None and record.state is TaskState.REVOKED
        assert record.error is not None and record.error.type == "TaskExpired"
        assert not record.dead_lettered
    assert core.queue_stats()[0].ready == 0
    assert core.queue_stats()[0].scheduled == 0


def test_a_known_task_id_or_idempotency_key_returns_the_existing_task() -> None:
    core, clock = make_broker()
    first = core.submit(spec(task_id="fixed"))
    again = core.submit(spec(task_id="fixed"))
    assert first.created and not again.created and again.task_id == "fixed"
    keyed = core.submit(spec(idempotency_key="order-7", idempotency_window_ms=60_000))
    repeat = core.submit(spec(idempotency_key="order-7"))
    assert not repeat.created and repeat.task_id == keyed.task_id
    advance(core, clock, 61)
    assert core.submit(spec(idempotency_key="order-7")).created


def test_results_expire_after_their_ttl_and_read_as_unknown() -> None:
    core, clock = make_broker(CONFIG.replace(result_ttl=100.0))
    short = core.submit(spec(result_ttl_ms=10_000)).task_id
    default = core.submit(spec()).task_id
    session = connect(core, credit=2)
    for assignment in taken(session):
        outcome(core, session, assignment.lease_id, result=Payload("application/json", b"8"))
    advance(core, clock, 11)
    assert core.get(short) is None
    assert core.get(default) is not None and core.get(default).result.body == b"8"  # type: ignore[union-attr]
    advance(core, clock, 90)
    assert core.get(default) is None


def test_the_result_store_is_bounded_and_evicts_the_oldest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, _ = make_broker(CONFIG.replace(max_results=2))
    ids = [core.submit(spec()).task_id for _ in range(3)]
    core.revoke(ids, terminate=False, reason="")
    assert core.get(ids[0]) is None
    assert core.get(ids[1]) is not None and core.get(ids[2]) is not None
    assert "evicting oldest result" in caplog.text


def test_the_dead_letter_set_is_bounded_and_drops_the_oldest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, _ = make_broker(CONFIG.replace(max_dead_letters=2))
    ids = [core.submit(spec()).task_id for _ in range(3)]
    session = connect(core, credit=3)
    for assignment in taken(session):
        fail(core, session, assignment.lease_id)
    listed, total = core.dead_letters()
    assert total == 2 and [record.task_id for record, _ in listed] == ids[1:]
    oldest = core.get(ids[0])  # its result stays readable for the result TTL
    assert oldest is not None and oldest.state is TaskState.FAILURE
    assert not oldest.dead_lettered and oldest.args is None
    assert "dead-letter set full" in caplog.text


def test_finished_tasks_drop_their_arguments() -> None:
    core, _ = make_broker()
    task_id = core.submit(spec()).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    outcome(core, session, assignment.lease_id)
    assert core.get(task_id).args is None  # type: ignore[union-attr]


def test_dead_letters_can_be_requeued_as_fresh_tasks_or_purged() -> None:
    core, _ = make_broker()
    ids = [core.submit(spec(queue=q)).task_id for q in ("a", "b")]
    session = connect(core, queues=("a", "b"), credit=2)
    for assignment in taken(session):
        fail(core, session, assignment.lease_id)
    assert core.dead_letters("a")[1] == 1
    assert core.requeue_dead_letters([ids[0]], all=False, queue="") == 1
    record = core.get(ids[0])
    assert record is not None and record.state is TaskState.PENDING
    assert not record.dead_lettered and record.retries == 0
    grant(core, session, 1)
    (again,) = taken(session)
    assert again.record.task_id == ids[0]
    assert again.record.args == JSON  # it runs with the arguments it was submitted with
    assert core.purge_dead_letters([], all=True, queue="") == 1
    assert core.get(ids[1]) is None
    assert core.dead_letters()[1] == 0


def test_purging_a_queue_revokes_its_ready_tasks() -> None:
    core, _ = make_broker()
    ids = [core.submit(spec()).task_id for _ in range(3)]
    assert core.purge_queue("default") == 3
    assert core.purge_queue("nowhere") == 0
    assert all(core.get(i).state is TaskState.REVOKED for i in ids)  # type: ignore[union-attr]


def test_a_retry_storm_leaves_every_count_consistent() -> None:
    core, clock = make_broker()
    count = 3000
    core.submit_many([spec() for _ in range(count)])
    session = connect(core, credit=count)
    leases = [a.lease_id for a in taken(session)]
    assert len(leases) == count
    for lease_id in leases:
        fail(core, session, lease_id, retry=True, retry_countdown_ms=1000, max_retries=3)
    stats = core.queue_stats()[0]
    assert (stats.ready, stats.scheduled, stats.leased) == (0, count, 0)
    advance(core, clock, 1)
    grant(core, session, count)
    assert len(taken(session)) == count
    assert core.queue_stats()[0].leased == count
    assert core.lifecycle.unfinished == count


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"priority": -1}, InvalidArgument),
        ({"priority": 2**31}, InvalidArgument),
        ({"name": "x" * 10_000}, InvalidArgument),
        ({"queue": ""}, InvalidArgument),
        ({"task_id": "a\nb"}, InvalidArgument),
        ({"max_retries": -5}, InvalidArgument),
        ({"args": Payload("application/json", b"1" * (2 * 1024 * 1024))}, PayloadTooLarge),
        ({"headers": {"h": "v" * (2 * 1024 * 1024)}}, PayloadTooLarge),
    ],
)
def test_absurd_input_is_refused_with_a_clear_error(
    fields: dict[str, object], error: type[Exception]
) -> None:
    core, _ = make_broker()
    with pytest.raises(error):
        core.submit(spec(**fields))  # type: ignore[arg-type]
    assert core.lifecycle.unfinished == 0


def test_a_far_future_eta_and_huge_countdown_are_just_waits() -> None:
    core, clock = make_broker()
    task_id = core.submit(spec(eta=clock.time() + 10**9)).task_id
    assert core.get(task_id).phase is Phase.SCHEDULED  # type: ignore[union-attr]


def test_a_full_broker_refuses_new_work() -> None:
    core, _ = make_broker(BrokerConfig(max_queued=2))
    core.submit(spec())
    with pytest.raises(QueueFull):
        core.submit_many([spec(), spec()])
    core.submit(spec())
    with pytest.raises(QueueFull, match="queue full"):
        core.submit(spec())


def test_every_transition_emits_one_event() -> None:
    events: list[TaskEvent] = []
    core, _ = make_broker(events=events)
    task_id = core.submit(spec()).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    outcome(core, session, assignment.lease_id)
    kinds = [e.kind for e in events if e.task_id == task_id]
    assert kinds == [EventKind.ACCEPTED, EventKind.QUEUED, EventKind.LEASED, EventKind.FINISHED]


def test_ignore_result_keeps_the_final_state_but_not_the_value() -> None:
    core, _ = make_broker()
    task_id = core.submit(spec(ignore_result=True)).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    outcome(core, session, assignment.lease_id, result=Payload("application/json", b"8"))
    record = core.get(task_id)
    assert record is not None and record.state is TaskState.SUCCESS
    assert record.result is None


def test_a_result_over_the_payload_limit_fails_the_task_instead_of_being_stored() -> None:
    core, _ = make_broker(BrokerConfig(max_payload_bytes=100))
    big, small = core.submit(spec()).task_id, core.submit(spec()).task_id
    session = connect(core, credit=2)
    first, second = taken(session)
    outcome(core, session, first.lease_id, result=Payload("application/json", b"1" * 101))
    outcome(core, session, second.lease_id, result=Payload("application/json", b"1" * 100))
    record = core.get(big)
    assert record is not None and record.state is TaskState.FAILURE and record.result is None
    assert record.error is not None and record.error.type == "ResultTooLarge"
    assert "101 bytes" in record.error.message and "max_payload_bytes" in record.error.message
    assert record.dead_lettered
    kept = core.get(small)
    assert kept is not None and kept.state is TaskState.SUCCESS
