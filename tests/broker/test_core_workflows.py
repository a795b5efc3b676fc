"""Workflows in the core: chains, chords, errbacks and barriers as dependencies between records."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig
from broker.core.model import DependencyMode, Payload, Phase, TaskRecord, TaskState
from broker.errors import DependencyCycle, UnknownDependency, WorkflowTooDeep, WorkflowTooLarge
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
from tests.broker.test_journal_restore import _journaled

RESULT = Payload("application/json", b"4")


def _chain(count: int) -> list:  # type: ignore[type-arg]
    specs = [spec(task_id="t0")]
    for i in range(1, count):
        specs.append(spec(task_id=f"t{i}", depends_on=(f"t{i - 1}",)))
    return specs


def _chord_with_errback() -> list:  # type: ignore[type-arg]
    """Members m0 and m1, a body gathering them, and an errback of the body."""
    return [
        spec(task_id="m0"),
        spec(task_id="m1"),
        spec(task_id="body", depends_on=("m0", "m1"), dependency_mode=DependencyMode.RESULTS),
        spec(task_id="err", depends_on=("body",), dependency_mode=DependencyMode.ERRBACK),
    ]


def test_a_chain_runs_one_link_at_a_time_and_passes_each_result_on() -> None:
    core, _ = make_broker()
    core.submit_many(_chain(3))
    session = connect(core, credit=10)
    assert core.get("t1").phase is Phase.WAITING  # type: ignore[union-attr]
    (first,) = taken(session)
    assert first.record.task_id == "t0" and first.record.inputs is None
    outcome(core, session, first.lease_id, result=RESULT)
    (second,) = taken(session)
    assert second.record.task_id == "t1"
    (parent,) = second.record.inputs or ()
    assert (parent.task_id, parent.result) == ("t0", RESULT)
    outcome(core, session, second.lease_id, result=Payload("application/json", b"8"))
    (third,) = taken(session)
    assert third.record.inputs[0].result.body == b"8"  # type: ignore[index,union-attr]
    assert core.workflows.waiting == 0


def test_a_chord_body_is_released_by_its_last_member_with_results_in_member_order() -> None:
    core, _ = make_broker()
    members = [spec(task_id=f"m{i}") for i in range(3)]
    body = spec(
        task_id="body", depends_on=("m0", "m1", "m2"), dependency_mode=DependencyMode.RESULTS
    )
    core.submit_many([*members, body])
    session = connect(core, credit=10)
    assigned = {a.record.task_id: a for a in taken(session)}
    assert sorted(assigned) == ["m0", "m1", "m2"]
    for name in ("m2", "m0"):
        outcome(core, session, assigned[name].lease_id, result=Payload("j", name.encode()))
    assert taken(session) == []  # one member still runs
    outcome(core, session, assigned["m1"].lease_id, result=Payload("j", b"m1"))
    (released,) = taken(session)
    assert [p.result.body for p in released.record.inputs] == [b"m0", b"m1", b"m2"]  # type: ignore[union-attr]


def test_a_failed_chord_member_fails_the_body_with_a_chord_error_and_runs_its_errback() -> None:
    core, _ = make_broker()
    core.submit_many(_chord_with_errback())
    session = connect(core, credit=10)
    assigned = {a.record.task_id: a for a in taken(session)}
    fail(core, session, assigned["m1"].lease_id)
    body = core.get("body")
    assert body is not None and body.state is TaskState.FAILURE
    assert body.error is not None and body.error.type == "ChordError"
    assert "m1" in body.error.message and "ValueError" in body.error.message
    (errback,) = taken(session)
    assert errback.record.task_id == "err"
    assert errback.record.inputs[0].task_id == "body"  # type: ignore[index]


def test_a_failed_link_fails_the_rest_of_the_chain_with_its_error_and_only_its_errback_runs() -> (
    None
):
    core, _ = make_broker()
    specs = _chain(3)
    for i in range(3):
        specs.append(
            spec(task_id=f"e{i}", depends_on=(f"t{i}",), dependency_mode=DependencyMode.ERRBACK)
        )
    core.submit_many(specs)
    session = connect(core, credit=10)
    (first,) = taken(session)
    fail(core, session, first.lease_id)
    for name in ("t1", "t2"):
        record = core.get(name)
        assert record is not None and record.state is TaskState.FAILURE
        assert record.error is not None and record.error.type == "builtins.ValueError"
    (errback,) = taken(session)
    assert errback.record.task_id == "e0"
    assert errback.record.inputs[0].error.message == "boom"  # type: ignore[index,union-attr]
    assert core.get("e1") is None and core.get("e2") is None  # dropped, never run


def test_a_1000_link_chain_failing_at_its_head_settles_without_recursion() -> None:
    core, _ = make_broker()
    core.submit_many(_chain(1000))
    session = connect(core, credit=1)
    (first,) = taken(session)
    fail(core, session, first.lease_id)
    last = core.get("t999")
    assert last is not None and last.state is TaskState.FAILURE


def test_an_errback_is_dropped_when_its_parent_succeeds() -> None:
    core, _ = make_broker()
    core.submit_many(
        [
            spec(task_id="a"),
            spec(task_id="e", depends_on=("a",), dependency_mode=DependencyMode.ERRBACK),
        ]
    )
    session = connect(core, credit=10)
    (first,) = taken(session)
    outcome(core, session, first.lease_id, result=RESULT)
    assert core.get("e") is None and taken(session) == []
    assert core.lifecycle.unfinished == 0


def test_depending_on_a_finished_task_releases_at_once() -> None:
    core, _ = make_broker()
    core.submit(spec(task_id="a"))
    session = connect(core, credit=10)
    (first,) = taken(session)
    outcome(core, session, first.lease_id, result=RESULT)
    core.submit(spec(task_id="b", depends_on=("a",)))
    (second,) = taken(session)
    assert second.record.inputs[0].result == RESULT  # type: ignore[index]


def test_a_barrier_finishes_without_a_worker_once_every_parent_finished() -> None:
    core, _ = make_broker()
    core.submit_many(
        [
            spec(task_id="a"),
            spec(task_id="b"),
            spec(task_id="g", depends_on=("a", "b"), dependency_mode=DependencyMode.BARRIER),
        ]
    )
    session = connect(core, credit=10)
    assigned = {a.record.task_id: a for a in taken(session)}
    fail(core, session, assigned["a"].lease_id)
    assert not core.get("g").ready  # type: ignore[union-attr]
    outcome(core, session, assigned["b"].lease_id, result=RESULT)
    assert core.get("g").state is TaskState.SUCCESS  # type: ignore[union-attr]
    assert taken(session) == []


def test_revoking_a_waiting_task_revokes_what_waits_for_it() -> None:
    core, _ = make_broker()
    core.submit_many(_chain(3))
    core.revoke(["t1"], terminate=False, reason="no")
    assert core.get("t2").state is TaskState.REVOKED  # type: ignore[union-attr]


def test_bad_workflows_are_refused_with_typed_reasons_and_nothing_is_accepted() -> None:
    core, _ = make_broker(BrokerConfig(max_dependencies=3, max_workflow_depth=4))
    with pytest.raises(UnknownDependency, match="unknown to the broker"):
        core.submit(spec(depends_on=("nope",)))
    with pytest.raises(DependencyCycle, match="depends on itself"):
        core.submit(spec(task_id="x", depends_on=("x",)))
    with pytest.raises(DependencyCycle, match="which depends on it"):
        core.submit_many(
            [spec(task_id="a", depends_on=("b",)), spec(task_id="b", depends_on=("a",))]
        )
    with pytest.raises(UnknownDependency, match="later in the batch"):
        core.submit_many([spec(task_id="a", depends_on=("b",)), spec(task_id="b")])
    with pytest.raises(WorkflowTooLarge) as large:
        core.submit_many(
            [
                *(spec(task_id=f"m{i}") for i in range(4)),
                spec(depends_on=("m0", "m1", "m2", "m3"), dependency_mode=DependencyMode.RESULTS),
            ]
        )
    assert large.value.reason == "WORKFLOW_TOO_LARGE" and "tasks[4]" in str(large.value)
    with pytest.raises(WorkflowTooDeep, match="max_workflow_depth=4"):
        core.submit_many(_chain(6))
    assert core.lifecycle.tasks == {}


def test_a_waiting_chord_survives_a_restart_and_completes_after_it() -> None:
    core, _, rows = _journaled()
    core.submit_many(
        [
            spec(task_id="m0"),
            spec(task_id="m1"),
            spec(task_id="body", depends_on=("m0", "m1"), dependency_mode=DependencyMode.RESULTS),
        ]
    )
    session = connect(core, credit=10)
    assigned = {a.record.task_id: a for a in taken(session)}
    outcome(core, session, assigned["m0"].lease_id, result=Payload("j", b"0"))
    restarted, restarted_clock = rows.restart(1.0)
    body = restarted.get("body")
    assert body is not None and body.phase is Phase.WAITING
    assert body.spec.depends_on == ("m0", "m1")
    assert body.spec.dependency_mode is DependencyMode.RESULTS
    assert restarted.workflows.waiting == 1
    advance(restarted, restarted_clock, CONFIG.lease_grace + 0.1)  # m1's worker never returns
    worker = connect(restarted, credit=10)
    (again,) = taken(worker)
    assert again.record.task_id == "m1"
    outcome(restarted, worker, again.lease_id, result=Payload("j", b"1"))
    (released,) = taken(worker)
    assert [p.result.body for p in released.record.inputs] == [b"0", b"1"]  # type: ignore[union-attr]


def test_a_released_task_gets_its_inputs_back_after_a_restart() -> None:
    core, _, rows = _journaled()
    core.submit_many(_chain(2))
    session = connect(core, credit=1)
    (first,) = taken(session)
    outcome(core, session, first.lease_id, result=RESULT)
    restarted, _ = rows.restart(1.0)
    worker = connect(restarted, credit=10)
    (second,) = taken(worker)
    assert second.record.task_id == "t1"
    assert second.record.inputs[0].result == RESULT  # type: ignore[index]


def test_config_defaults_allow_a_chord_of_ten_thousand() -> None:
    assert CONFIG.max_dependencies >= 10_000


def test_a_replaced_task_takes_its_replacements_outcome_and_its_chain_goes_on() -> None:
    core, _, rows = _journaled()
    core.submit_many(_chain(2))
    session = connect(core, credit=10)
    (first,) = taken(session)
    core.submit(spec(task_id="r"))
    (replacement,) = taken(session)
    outcome(core, session, first.lease_id, replaced_by="r")
    record = core.get("t0")
    assert record is not None and record.phase is Phase.WAITING and record.replaced_by == "r"
    restarted, _ = rows.restart(1.0)
    assert restarted.get("t0").replaced_by == "r"  # type: ignore[union-attr]
    outcome(core, session, replacement.lease_id, result=RESULT)
    assert core.get("t0").result == RESULT  # type: ignore[union-attr]
    (second,) = taken(session)
    assert second.record.task_id == "t1" and second.record.inputs[0].result == RESULT  # type: ignore[index]


def _finished(task_id: str, body: bytes) -> TaskRecord:
    """A finished record as another broker sharing the database stored it (a mirror)."""
    record = TaskRecord(task_id, spec(task_id=task_id))
    record.phase, record.state = Phase.FINISHED, TaskState.SUCCESS
    record.result = Payload("application/json", body)
    return record


def test_a_chord_body_waits_for_members_other_brokers_hold_and_takes_their_results() -> None:
    core, _ = make_broker()
    body = spec(
        task_id="body", depends_on=("m0", "m1", "here"), dependency_mode=DependencyMode.RESULTS
    )
    with pytest.raises(UnknownDependency):  # unknown, and not said to be held elsewhere
        core.submit_many([body])
    core.submit_many([spec(task_id="here", queue="none")])
    with core.workflows.parents_elsewhere({"m0", "m1"}):
        core.submit_many([body])
    assert core.workflows.awaits("m0") and core.workflows.awaits("m1")
    session = connect(core, credit=10, queues=("default",))
    core.restore([_finished("m1", b"1")], [])  # finished on another broker, read back
    core.restore([_finished("other", b"0")], [])  # restoring an unrelated task settles nothing
    here = core.get("here")
    assert here is not None
    core.lifecycle.finish(here, TaskState.SUCCESS, result=Payload("application/json", b"2"))
    core.dispatch()
    assert taken(session) == []  # m0 still runs elsewhere
    assert core.get("body").phase is Phase.WAITING  # type: ignore[union-attr]
    core.restore([_finished("m0", b"0")], [])
    core.dispatch()
    (released,) = taken(session)
    assert [p.result.body for p in released.record.inputs] == [b"0", b"1", b"2"]  # type: ignore[union-attr]


def test_a_replacement_another_broker_holds_is_looked_for_and_its_outcome_taken() -> None:
    core, _ = make_broker()
    looked_for: list[str] = []
    core.workflows.on_wait_elsewhere = looked_for.append  # brokers sharing a database
    core.submit_many([spec(task_id="t0"), spec(task_id="t1")])
    session = connect(core, credit=10)
    first, second = taken(session)
    outcome(core, session, first.lease_id, replaced_by="elsewhere")
    outcome(core, session, second.lease_id, replaced_by="nowhere")
    assert looked_for == ["elsewhere", "nowhere"]
    assert core.get("t0").phase is Phase.WAITING  # type: ignore[union-attr]
    core.restore([_finished("elsewhere", b"5")], [])  # read back once it finished there
    t0 = core.get("t0")
    assert t0 is not None and t0.state is TaskState.SUCCESS and t0.result == RESULT5
    core.workflows.replacement_lost("nowhere")  # no broker has it
    t1 = core.get("t1")
    assert t1 is not None and t1.state is TaskState.FAILURE
    assert t1.error is not None and t1.error.type == "ReplacementLost"


RESULT5 = Payload("application/json", b"5")


def test_revoking_a_queued_chord_member_fails_the_body_with_a_chord_error_and_its_errback() -> None:
    core, _ = make_broker()
    core.submit_many(_chord_with_errback())
    core.revoke(["m1"], terminate=False, reason="not wanted")
    body = core.get("body")
    assert body is not None and body.state is TaskState.FAILURE
    assert body.error is not None and body.error.type == "ChordError"
    assert "m1" in body.error.message
    session = connect(core, credit=10)
    assert sorted(a.record.task_id for a in taken(session)) == ["err", "m0"]


def test_a_chain_whose_middle_link_expires_while_waiting_revokes_the_rest() -> None:
    core, clock = make_broker()
    specs = _chain(3)
    specs[1].expires = clock.time() + 5
    core.submit_many(specs)
    session = connect(core, credit=10)
    (first,) = taken(session)
    advance(core, clock, 6)  # t1 expires while it waits for t0
    for name in ("t1", "t2"):
        record = core.get(name)
        assert record is not None and record.state is TaskState.REVOKED, name
    outcome(core, session, first.lease_id, result=RESULT)
    assert taken(session) == [] and core.workflows.waiting == 0


def test_an_errback_sent_after_its_link_failed_by_propagation_is_dropped_after_a_restart() -> None:
    # Celery runs only the errbacks of the task that raised: a link failed by an earlier one
    # never runs its own, whenever the errback arrives and whatever restarts came between.
    core, _, rows = _journaled()
    core.submit_many(_chain(2))
    session = connect(core, credit=10)
    (first,) = taken(session)
    fail(core, session, first.lease_id)
    errbacks = [
        spec(task_id=f"e{i}", depends_on=(f"t{i}",), dependency_mode=DependencyMode.ERRBACK)
        for i in range(2)
    ]
    core.submit_many(errbacks)
    (ran,) = taken(session)
    assert ran.record.task_id == "e0"
    assert core.get("e1") is None
    restarted, _ = rows.restart(1.0)
    restarted.submit(
        spec(task_id="late", depends_on=("t1",), dependency_mode=DependencyMode.ERRBACK)
    )
    assert restarted.get("late") is None
    assert restarted.get("t1").state is TaskState.FAILURE  # type: ignore[union-attr]
