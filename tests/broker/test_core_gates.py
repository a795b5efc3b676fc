"""Global rate limits and per-key concurrency limits at dispatch, on the injected clock."""

from __future__ import annotations

import pytest

from broker.core.broker import Broker
from broker.core.model import Hello, Phase, TaskState
from broker.core.sessions import Session
from broker.errors import InvalidArgument
from broker.journal.rows import StoredTask, decode, decode_rate, encode, encode_rate
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


def limited(core: Broker, name: str, rate: float, worker_id: str = "w1") -> Session:
    """A worker session whose hello declares ``name``'s rate limit."""
    session, _ = core.workers.open(Hello(worker_id=worker_id, rate_limits=((name, rate),)))
    return session


def ids(session: Session) -> list[str]:
    return [a.record.task_id for a in taken(session)]


# -- rate limits -----------------------------------------------------------------------------


def test_a_rate_limit_spaces_assignments_and_a_timer_wakes_dispatch() -> None:
    core, clock = make_broker()
    session = limited(core, "tasks.add", 2.0)
    for i in range(4):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert ids(session) == ["t0"]
    # The next token is due in 0.5 s, and the broker's single timer says so: nobody polls.
    assert core.next_deadline() == pytest.approx(clock.monotonic() + 0.5)
    advance(core, clock, 0.49)
    assert ids(session) == []
    advance(core, clock, 0.01)
    assert ids(session) == ["t1"]
    advance(core, clock, 0.5)
    assert ids(session) == ["t2"]
    advance(core, clock, 0.5)
    assert ids(session) == ["t3"]
    # Nothing is parked any more: no token timer is left armed.
    assert core.lifecycle.gates.rates["tasks.add"].timer is None


def test_the_rate_holds_across_every_worker_together() -> None:
    core, clock = make_broker()
    first = limited(core, "tasks.add", 1.0, "a")
    second = limited(core, "tasks.add", 1.0, "b")
    for i in range(6):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, first, 10)
    grant(core, second, 10)
    per_second = []
    for _ in range(5):
        per_second.append(len(taken(first)) + len(taken(second)))
        advance(core, clock, 1.0)
    assert per_second == [1, 1, 1, 1, 1]


def test_a_late_timer_keeps_the_schedule_but_idleness_earns_no_burst() -> None:
    core, clock = make_broker()
    session = limited(core, "tasks.add", 10.0)
    grant(core, session, 100)
    for i in range(3):
        core.submit(spec(task_id=f"t{i}"))
    assert ids(session) == ["t0"]
    advance(core, clock, 0.13)  # the timer rang 30 ms late
    assert ids(session) == ["t1"]
    advance(core, clock, 0.07)  # the token after it is still due at 0.2 s
    assert ids(session) == ["t2"]
    advance(core, clock, 2.0)  # idle for 20 tokens' time
    for i in range(3, 6):
        core.submit(spec(task_id=f"t{i}"))
    assert ids(session) == ["t3"]


def test_tasks_without_a_limit_are_not_held_behind_limited_ones() -> None:
    core, _ = make_broker()
    session = limited(core, "tasks.slow", 0.1)
    for i in range(3):
        core.submit(spec("tasks.slow", task_id=f"slow{i}"))
    core.submit(spec("tasks.add", task_id="free"))
    grant(core, session, 10)
    assert ids(session) == ["slow0", "free"]
    # Parked tasks are still queued: the depth counts them.
    assert core.queue_stats()[0].ready == 2


def test_the_latest_hello_wins_and_a_hello_that_does_not_name_a_task_keeps_its_limit() -> None:
    core, _ = make_broker()
    limited(core, "tasks.add", 1.0, "old")
    assert core.lifecycle.gates.rate_of("tasks.add") == 1.0
    core.workers.open(Hello(worker_id="other-language", task_names=("tasks.add",)))
    assert core.lifecycle.gates.rate_of("tasks.add") == 1.0
    session = limited(core, "tasks.add", 0.0, "new")  # redeployed without a limit
    assert core.lifecycle.gates.rate_of("tasks.add") == 0.0
    for i in range(3):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert len(taken(session)) == 3


def test_an_operators_override_wins_over_every_hello_until_it_is_reset() -> None:
    core, _ = make_broker()
    core.lifecycle.track_changes()  # as with a journal attached
    session = limited(core, "tasks.add", 1.0)
    for i in range(3):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert ids(session) == ["t0"]  # the others are parked behind the 1/s gate
    state = core.set_rate_limit("tasks.add", 0.0)  # lifted: the parked tasks go at once
    assert (state.per_second, state.declared_per_second, state.overridden) == (0.0, 1.0, True)
    assert ids(session) == ["t1", "t2"]
    assert core.lifecycle.take_rate_changes() == {"tasks.add": 0.0}
    limited(core, "tasks.add", 5.0, "w2")  # a later hello only changes the declared rate
    assert core.rate_limit("tasks.add").per_second == 0.0
    core.set_rate_limit("tasks.add", 2.0)
    assert core.rate_limit("tasks.add").per_second == 2.0
    state = core.set_rate_limit("tasks.add", None)
    assert (state.per_second, state.declared_per_second, state.overridden) == (5.0, 5.0, False)
    assert core.lifecycle.take_rate_changes() == {"tasks.add": None}
    # A task no worker declares: reset means no limit.
    core.set_rate_limit("tasks.other", 3.0)
    assert core.set_rate_limit("tasks.other", None).per_second == 0.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_infinite_override_is_refused(bad: float) -> None:
    core, _ = make_broker()
    with pytest.raises(InvalidArgument, match="tasks per second >= 0"):
        core.set_rate_limit("tasks.add", bad)
    with pytest.raises(InvalidArgument, match="task_name"):
        core.set_rate_limit("", 1.0)
    assert core.rate_limit("tasks.add").overridden is False


def test_an_override_row_reads_back_and_a_corrupt_one_is_named() -> None:
    assert decode_rate(encode_rate(0.25)) == 0.25
    for corrupt in ("{}", '{"per_second": -1}', "not json"):
        with pytest.raises(ValueError, match="rate-limit override: undecodable row"):
            decode_rate(corrupt)


def test_removing_a_limit_releases_the_parked_tasks_in_order() -> None:
    core, _ = make_broker()
    session = limited(core, "tasks.add", 0.01)
    for i in range(4):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert ids(session) == ["t0"]
    limited(core, "tasks.add", 0.0, "redeployed")
    core.dispatch()
    assert ids(session) == ["t1", "t2", "t3"]


def test_a_revoked_parked_task_never_runs_and_the_next_one_takes_its_token() -> None:
    core, clock = make_broker()
    session = limited(core, "tasks.add", 1.0)
    for i in range(3):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert ids(session) == ["t0"]
    core.revoke(["t1"], terminate=False, reason="no")
    advance(core, clock, 1.0)
    assert ids(session) == ["t2"]
    assert core.get("t1") is not None and core.get("t1").state is TaskState.REVOKED  # type: ignore[union-attr]


def test_a_reopened_task_that_expires_in_its_queue_hands_its_turn_on() -> None:
    core, clock = make_broker()
    session = limited(core, "tasks.add", 1.0)
    grant(core, session, 1)
    now = clock.time()
    core.submit(spec(task_id="t0"))
    core.submit(spec(task_id="t1", expires=now + 1.5))
    core.submit(spec(task_id="t2"))
    assert ids(session) == ["t0"]
    advance(core, clock, 1.0)  # t1 is reopened, but the worker has no credit
    advance(core, clock, 1.0)  # ... and it expires in its queue
    grant(core, session, 1)
    assert ids(session) == ["t2"]
    assert core.get("t1").state is TaskState.REVOKED  # type: ignore[union-attr]


def test_purging_a_queue_takes_its_parked_tasks_too() -> None:
    core, _ = make_broker()
    session = limited(core, "tasks.add", 0.01)
    for i in range(3):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert core.purge_queue("default") == 2
    assert core.queue_stats()[0].ready == 0


# -- concurrency limits ----------------------------------------------------------------------


def test_a_concurrency_key_holds_at_most_its_limit_of_leases_across_workers() -> None:
    core, _ = make_broker()
    first = connect(core, "a", credit=10)
    second = connect(core, "b", credit=10)
    for i in range(5):
        core.submit(spec(task_id=f"t{i}", concurrency_key="tenant-1", concurrency_limit=2))
    core.submit(spec(task_id="other", concurrency_key="tenant-2", concurrency_limit=2))
    running = taken(first) + taken(second)
    assert sorted(a.record.task_id for a in running) == ["other", "t0", "t1"]
    by_id = {a.record.task_id: a for a in running}
    # A success frees a slot: the oldest waiting task takes it.
    holder = first if by_id["t0"].record.worker_id == "a" else second
    outcome(core, holder, by_id["t0"].lease_id)
    assert [a.record.task_id for a in taken(first) + taken(second)] == ["t2"]


def test_every_way_a_lease_ends_frees_its_slot() -> None:
    core, clock = make_broker()
    worker = connect(core, "w", credit=10)
    for i in range(5):
        core.submit(spec(task_id=f"t{i}", concurrency_limit=1, max_retries=0))
    (first,) = taken(worker)
    fail(core, worker, first.lease_id)  # failure
    (second,) = taken(worker)
    assert second.record.task_id == "t1"
    core.revoke(["t1"], terminate=True, reason="stop")  # revoke while running
    core.dispatch()
    (third,) = taken(worker)
    assert third.record.task_id == "t2"
    core.workers.close(worker, "killed")  # worker death: requeued after the lease grace
    other = connect(core, "other", credit=10)
    assert taken(other) == []
    advance(core, clock, 2.5)
    assert [a.record.task_id for a in taken(other)] == ["t2"]


def test_a_retry_frees_the_slot_and_the_next_task_runs_meanwhile() -> None:
    core, _ = make_broker()
    worker = connect(core, "w", credit=10)
    core.submit(spec(task_id="t0", concurrency_limit=1, max_retries=3))
    core.submit(spec(task_id="t1", concurrency_limit=1))
    (first,) = taken(worker)
    fail(core, worker, first.lease_id, retry=True, retry_countdown_ms=60_000)
    assert [a.record.task_id for a in taken(worker)] == ["t1"]
    assert core.get("t0").phase is Phase.SCHEDULED  # type: ignore[union-attr]


def test_without_a_key_the_task_name_is_the_key_and_idle_keys_are_dropped() -> None:
    core, _ = make_broker()
    worker = connect(core, "w", credit=10)
    core.submit(spec("tasks.a", task_id="a0", concurrency_limit=1))
    core.submit(spec("tasks.a", task_id="a1", concurrency_limit=1))
    core.submit(spec("tasks.b", task_id="b0", concurrency_limit=1))
    running = taken(worker)
    assert [a.record.task_id for a in running] == ["a0", "b0"]
    for assignment in running:
        outcome(core, worker, assignment.lease_id)
    (last,) = taken(worker)
    outcome(core, worker, last.lease_id)
    assert core.lifecycle.gates.slots == {}


def test_a_concurrency_limited_spec_survives_the_journal_row() -> None:
    core, _ = make_broker()
    core.submit(spec(task_id="t0", concurrency_key="k", concurrency_limit=3))
    record = core.get("t0")
    assert record is not None
    row = encode(record, lambda _: 0.0)
    assert row.spec is not None
    back = decode(StoredTask("t0", row.spec, None, row.args, None, row.state))
    assert (back.spec.concurrency_key, back.spec.concurrency_limit) == ("k", 3)
    plain = encode(core.get(core.submit(spec()).task_id), lambda _: 0.0)  # type: ignore[arg-type]
    assert plain.spec is not None and plain.spec.count(",") == row.spec.count(",") - 2


class _Budget:
    """Rate tokens and slots handed out by hand, as a shared database would (broker.cluster)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, int]] = []
        self.slots_asked: list[tuple[str, int, str]] = []
        self.freed: list[tuple[str, str]] = []

    def ask_tokens(self, name: str, per_second: float, count: int) -> None:
        self.asked.append((name, per_second, count))

    def ask_slot(self, key: str, limit: int, task_id: str) -> None:
        self.slots_asked.append((key, limit, task_id))

    def free_slot(self, key: str, task_id: str) -> None:
        self.freed.append((key, task_id))


def test_with_a_budget_the_rate_gate_runs_tasks_only_at_the_tokens_it_was_granted() -> None:
    core, clock = make_broker()
    budget = _Budget()
    core.lifecycle.gates.share(budget)
    session = limited(core, "tasks.add", 2.0)
    for i in range(4):
        core.submit(spec(task_id=f"t{i}"))
    grant(core, session, 10)
    assert ids(session) == []  # no token of its own: asked once, when the first task parked
    assert budget.asked == [("tasks.add", 2.0, 1)]
    now = clock.monotonic()
    core.lifecycle.gates.grant("tasks.add", [now + 1.0, now + 1.5])
    advance(core, clock, 0.99)
    assert ids(session) == []
    advance(core, clock, 0.01)
    assert ids(session) == ["t0"]
    advance(core, clock, 0.5)
    assert ids(session) == ["t1"]
    assert budget.asked[1:] == [("tasks.add", 2.0, 2)]  # spent: a second's worth for two
    now = clock.monotonic()
    core.lifecycle.gates.grant("tasks.add", [now - 5.0, now - 0.1, now])
    advance(core, clock, 0.0)
    # The stale token (late by more than an interval) is dropped, not spent in a burst.
    assert ids(session) == ["t2"]
    advance(core, clock, 0.0)
    assert ids(session) == ["t3"]


def test_with_a_budget_a_concurrency_limited_task_runs_once_it_holds_a_slot_of_the_database() -> (
    None
):
    core, _ = make_broker()
    budget = _Budget()
    gates = core.lifecycle.gates
    gates.share(budget)
    for i in range(3):
        core.submit(spec(task_id=f"t{i}", concurrency_key="k", concurrency_limit=2))
    session = connect(core, credit=10)
    assert ids(session) == []
    assert budget.slots_asked == [("k", 2, "t0")]  # one at a time, the oldest first
    gates.slot_answer("k", "t0", granted=True)
    core.dispatch()
    assert ids(session) == ["t0"]
    assert budget.slots_asked[1:] == [("k", 2, "t1")]  # another may be free
    gates.slot_answer("k", "t1", granted=False)  # every slot is held (another broker's too)
    core.dispatch()
    assert ids(session) == [] and len(budget.slots_asked) == 2
    gates.slot_freed("k")  # some broker gave one back
    assert budget.slots_asked[2:] == [("k", 2, "t1")]
    core.revoke(["t1"], terminate=False, reason="test")
    gates.slot_answer("k", "t1", granted=True)  # too late: given back at once
    assert budget.freed == [("k", "t1")]
    assert budget.slots_asked[3:] == [("k", 2, "t2")]
