"""Recovery without I/O: changes noted by one core, encoded as rows, restored into a new core.

The rows go through the journal's own encode/decode (broker.journal.rows), so these tests hold
the restore path and the row format together; the store is left out (tests/e2e/test_durability
covers it with real processes).
"""

from __future__ import annotations

from dataclasses import replace

from broker.clock import ManualClock
from broker.core.broker import Broker
from broker.core.model import Hello, Payload, Phase, TaskError, TaskRecord, TaskSpec, TaskState
from broker.journal.rows import StoredTask, decode, encode
from tests.broker.core_support import CONFIG, advance, connect, fail, outcome, spec, taken

START = 1_700_000_000.0


class _Rows:
    """The journal's table in memory: what a store would hold after every batch."""

    def __init__(self, core: Broker) -> None:
        self.core = core
        self.rows: dict[str, StoredTask] = {}
        self.last_row = 0
        core.lifecycle.track_changes()

    def commit(self) -> None:
        for task_id, record in self.core.lifecycle.take_changes().items():
            if record is None:
                self.rows.pop(task_id, None)
                continue
            row = encode(record, self.core.idempotency_until)
            if not row.row:
                self.last_row += 1
                row.row = record.journal_row = self.last_row
            old = self.rows.get(task_id)
            self.rows[task_id] = StoredTask(
                task_id,
                row.spec if row.spec is not None else old.spec,  # type: ignore[union-attr]
                row.key_until if old is None else old.key_until,
                None if row.drop_args else (row.args if old is None else old.args),
                row.result,
                row.state,
                row.row,
            )

    def restart(self, seconds_down: float) -> tuple[Broker, ManualClock]:
        """A new core, ``seconds_down`` later, rebuilt from the rows."""
        self.commit()
        clock = ManualClock(START)
        clock.advance(seconds_down)
        core = Broker(CONFIG, clock)
        records = [decode(stored) for stored in self.rows.values()]
        keys = [
            (r.spec.idempotency_key, r.task_id, s.key_until)
            for r, s in zip(records, self.rows.values(), strict=True)
            if s.key_until is not None
        ]
        core.restore(records, keys)
        return core, clock


def _journaled() -> tuple[Broker, ManualClock, _Rows]:
    clock = ManualClock(START)
    core = Broker(CONFIG, clock)
    return core, clock, _Rows(core)


def test_queued_tasks_come_back_in_order_with_priorities_and_redeliveries_first() -> None:
    core, clock, rows = _journaled()
    ids = [core.submit(spec(task_id=f"t{i}")).task_id for i in range(4)]
    core.submit(spec(task_id="urgent", priority=9))
    session = connect(core, credit=1)
    (first,) = taken(session)
    assert first.record.task_id == "urgent"
    rows.commit()
    # The worker hands it back unstarted: it goes to the front of its lane.
    core.workers.close(session, "gone")
    advance(core, clock, CONFIG.lease_grace + 0.1)
    restored, _ = rows.restart(1.0)
    worker = connect(restored, credit=10)
    assert [a.record.task_id for a in taken(worker)] == ["urgent", *ids]
    assert restored.get("urgent").redeliveries == 1  # type: ignore[union-attr]


def test_scheduled_tasks_keep_their_due_time_and_run_when_due() -> None:
    core, _, rows = _journaled()
    later = core.submit(spec(eta=START + 100)).task_id
    soon = core.submit(spec(eta=START + 5)).task_id
    restored, clock = rows.restart(10.0)  # `soon` fell due while the broker was down
    restored.fire_timers()
    worker = connect(restored, credit=10)
    (first,) = taken(worker)
    assert first.record.task_id == soon
    outcome(restored, worker, first.lease_id)  # a worker holding nothing is not timed out
    clock.advance(90.0)
    restored.fire_timers()
    assert [a.record.task_id for a in taken(worker)] == [later]


def test_expired_tasks_stay_expired_and_results_keep_their_remaining_ttl() -> None:
    core, _, rows = _journaled()
    done = core.submit(spec(result_ttl_ms=60_000)).task_id
    session = connect(core, credit=1)
    (assignment,) = taken(session)
    outcome(core, session, assignment.lease_id, result=spec().args)
    expiring = core.submit(spec(expires=START + 5)).task_id
    restored, clock = rows.restart(30.0)
    restored.fire_timers()
    record = restored.get(expiring)
    assert record is not None and record.state is TaskState.REVOKED
    assert record.error is not None and record.error.type == "TaskExpired"
    result = restored.get(done)
    assert result is not None and result.state is TaskState.SUCCESS
    assert result.result == spec().args
    clock.advance(31.0)  # past the 60 s TTL counted from when it finished
    restored.fire_timers()
    assert restored.get(done) is None


def test_leased_tasks_wait_for_their_worker_then_are_requeued_with_the_attempt_counted() -> None:
    core, _, rows = _journaled()
    kept = core.submit(spec()).task_id
    lost = core.submit(spec(queue="other")).task_id
    keeper = connect(core, "keeper", credit=1)
    loser = connect(core, "loser", queues=("other",), credit=1)
    (kept_assignment,) = taken(keeper)
    taken(loser)
    restored, clock = rows.restart(1.0)
    hello = Hello(worker_id="keeper", held_lease_ids=(kept_assignment.lease_id,))
    session, reclaimed = restored.workers.open(hello)
    assert reclaimed == [kept_assignment.lease_id]
    clock.advance(CONFIG.lease_grace + 0.1)
    restored.fire_timers()
    assert restored.get(kept).phase is Phase.LEASED  # type: ignore[union-attr]
    record = restored.get(lost)
    assert record is not None and record.phase is Phase.QUEUED and record.redeliveries == 1
    outcome(restored, session, kept_assignment.lease_id)
    assert restored.get(kept).state is TaskState.SUCCESS  # type: ignore[union-attr]


def test_revoked_dead_lettered_and_deduplicated_tasks_survive() -> None:
    core, _, rows = _journaled()
    revoked = core.submit(spec()).task_id
    core.revoke([revoked], terminate=False, reason="no")
    keyed = core.submit(spec(idempotency_key="order-7")).task_id
    poison = core.submit(spec(queue="p", max_retries=0)).task_id
    session = connect(core, queues=("p",), credit=1)
    (assignment,) = taken(session)
    fail(core, session, assignment.lease_id)
    restored, _ = rows.restart(5.0)
    assert restored.get(revoked).state is TaskState.REVOKED  # type: ignore[union-attr]
    again = restored.submit(spec(idempotency_key="order-7"))
    assert (again.task_id, again.created) == (keyed, False)
    letters, total = restored.dead_letters()
    assert total == 1 and letters[0][0].task_id == poison
    assert restored.requeue_dead_letters([poison], all=False, queue="") == 1
    assert restored.get(poison).args == spec().args  # type: ignore[union-attr]


def test_nothing_is_noted_without_a_journal() -> None:
    core = Broker(CONFIG, ManualClock(START))
    core.submit(spec())
    assert core.lifecycle.changes is None
    assert core.lifecycle.take_changes() == {}


def test_many_changes_to_one_task_in_a_turn_are_one_row() -> None:
    core, _, rows = _journaled()
    connect(core, credit=1)
    task_id = core.submit(spec()).task_id
    changes = core.lifecycle.take_changes()
    assert list(changes) == [task_id]
    assert changes[task_id].phase is Phase.LEASED  # type: ignore[union-attr]
    del rows


def test_a_row_round_trips_every_field_whatever_its_characters() -> None:
    odd = 'quote " backslash \\ newline \n unicode ü 漢 \x1f'
    task_spec = TaskSpec(
        name=f"tasks.{odd}",
        task_id="given",
        queue="q",
        headers={odd: odd},
        priority=7,
        eta=START + 0.125,
        expires=START + 99.5,
        time_limit_ms=10,
        soft_time_limit_ms=5,
        idempotency_key=odd,
        idempotency_window_ms=60_000,
        ignore_result=True,
        result_ttl_ms=30_000,
        max_retries=0,
    )
    record = TaskRecord("given", task_spec)
    record.args = Payload("application/json", b"[[1], {}]")
    record.phase, record.state = Phase.FINISHED, TaskState.FAILURE
    record.retries, record.attempts, record.redeliveries = 1, 2, 3
    record.worker_id, record.lease_id, record.seq = odd, "lease-1", -4
    record.date_done, record.dead_lettered = START + 1.5, True
    record.error = TaskError("ValueError", odd, f"Traceback\n{odd}", True)
    row = encode(record, lambda spec: START + 60)
    assert row.spec is not None and row.key_until == START + 60
    back = decode(StoredTask("given", row.spec, row.key_until, row.args, None, row.state, 9))
    # A restored spec's task id as submitted is empty: only a submit reads it.
    assert back.spec == replace(task_spec, task_id="") and back.journal_row == 9
    for name in ("phase", "state", "retries", "attempts", "redeliveries", "worker_id"):
        assert getattr(back, name) == getattr(record, name), name
    assert (back.lease_id, back.seq, back.date_done) == ("lease-1", -4, START + 1.5)
    assert back.dead_lettered and back.error == record.error and back.args == record.args
