"""Celery's canvas through the real path: the broker holds the workflow, real workers run it.

Celery's documented examples, in our own words: a chain of adds, a chord summing a group, a
group inside a chain, callbacks and error callbacks, a failed chord member.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import AsyncResult, Celeriac, GroupResult, chain, chord, group
from client.errors import ChordError, InvalidTaskSpec, LimitExceeded
from client.records import SubmitSpec
from tests.e2e import canvas_tasks as t
from tests.support import BrokerProcess, WorkerProcess

TASKS = "tests.e2e.canvas_tasks"
StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def app(broker_process: BrokerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celeriac]:
    """The canvas task module's app, pointed at this test's broker (in its workers too)."""
    monkeypatch.setenv("CELERIAC_BROKER", broker_process.address)
    client_app = Celeriac("canvas-client", broker=broker_process.address, connect_timeout=5)
    t.app.conf = client_app.conf
    yield t.app
    t.app.close()
    client_app.close()


@pytest.fixture
def worker(app: Celeriac, start_worker: StartWorker) -> WorkerProcess:
    return start_worker("--pool", "thread", "--concurrency", "4", tasks=TASKS)


def test_a_chain_passes_each_result_on_and_get_waits_for_the_last(worker: WorkerProcess) -> None:
    result = chain(t.add.s(2, 2), t.add.s(4), t.add.s(8)).apply_async()
    assert result.get(timeout=20) == 16
    assert result.parent is not None and result.parent.get(timeout=5) == 8
    assert (t.add.s(2, 2) | t.mul.s(8) | t.add.si(1, 1))().get(timeout=20) == 2


def test_a_chord_sums_its_group_once_every_member_finished(worker: WorkerProcess) -> None:
    result = chord(t.add.s(i, i) for i in range(10))(t.tsum.s())
    assert result.get(timeout=20) == 90
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=5) == [i + i for i in range(10)]
    assert chord([t.add.s(1, 1), t.add.s(2, 2)], t.echo.s("tail")).delay().get(timeout=20) == [
        [2, 4],
        "tail",
    ]
    # An empty header, as in Celery: the body runs at once, with no results.
    assert chord([], t.tsum.s())().get(timeout=20) == 0


def test_groups_and_chains_nest_in_any_combination(worker: WorkerProcess) -> None:
    # A group inside a chain is a chord; a chain inside a group runs as one member.
    inner = t.add.s(1, 1) | group(t.add.s(10), t.mul.s(10)) | t.tsum.s()
    assert inner.apply_async().get(timeout=20) == 32
    members = group(t.add.s(1, 1) | t.mul.s(3), t.add.s(5, 5)).apply_async()
    assert members.get(timeout=20) == [6, 10]
    nested = t.add.s(2, 3) | chord([t.add.s(1), t.add.s(2)], t.tsum.s()) | t.mul.s(2)
    assert nested.delay().get(timeout=20) == 26


def test_link_runs_a_callback_with_the_result(worker: WorkerProcess, tmp_path: Path) -> None:
    path = str(tmp_path / "notes")
    t.add.apply_async((2, 2), link=t.note.s(path))
    worker.wait_for_line("NOTED 4")
    assert Path(path).read_text() == "4\n"


def test_link_error_calls_errbacks_in_both_of_celerys_forms(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    path = str(tmp_path / "errors")
    result = t.fail.apply_async(
        ("x",), link_error=[t.old_errback.s(path), t.new_errback.s(path)], link=t.note.s(path)
    )
    with pytest.raises(ValueError, match="failed with"):
        result.get(timeout=20)
    worker.wait_for_line(f"NOTED old {result.id}")
    worker.wait_for_line(f"NOTED new {result.id} ValueError failed with")
    assert "NOTED 4" not in worker.output  # the success callback never ran


def test_a_failed_link_stops_the_chain_and_its_error_reaches_the_last(
    worker: WorkerProcess,
) -> None:
    result = (t.add.s(1, 1) | t.fail.s() | t.add.s(1) | t.add.s(2)).apply_async()
    with pytest.raises(ValueError, match=r"failed with \[2\]"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    assert isinstance(result.parent, AsyncResult) and result.parent.state == "FAILURE"
    assert "add" not in worker.output.split("failed with")[-1]  # nothing ran after the failure


def test_a_failed_chord_member_fails_the_body_and_calls_its_errback(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    path = str(tmp_path / "chord-errors")
    header = [t.add.s(1, 1), t.fail.s("member"), t.add.s(2, 2)]
    body = t.tsum.s().set(link_error=[t.old_errback.s(path)])
    result = chord(header)(body)
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError"):
        result.get(timeout=20)
    failed_member = result.parent[1].id  # type: ignore[index]
    assert failed_member in str(result.result)
    worker.wait_for_line(f"NOTED old {result.id}")


def test_a_saved_group_is_restored_by_id(app: Celeriac, worker: WorkerProcess) -> None:
    saved = group(t.add.s(i, 1) for i in range(5)).apply_async().save()
    restored = GroupResult.restore(saved.id, app=app)
    assert restored is not None and [r.id for r in restored] == [r.id for r in saved]
    assert restored.get(timeout=20) == [1, 2, 3, 4, 5]
    assert GroupResult.restore("no-such-group", app=app) is None


def test_a_task_replaced_by_a_chain_takes_its_result_and_its_chain_goes_on(
    worker: WorkerProcess,
) -> None:
    alone = t.replaced.delay(4)
    assert alone.get(timeout=20) == 50
    assert (t.replaced.s(1) | t.add.s(1)).delay().get(timeout=20) == 21
    in_chord = chord([t.replaced.s(2), t.add.s(1, 1)])(t.tsum.s())
    assert in_chord.get(timeout=20) == 32


def test_a_task_replaced_by_a_group_takes_the_list_of_its_results(
    app: Celeriac, worker: WorkerProcess
) -> None:
    assert t.fanned_out.delay(3).get(timeout=20) == [0, 10, 20]
    assert (t.fanned_out.s(2) | t.tsum.s()).delay().get(timeout=20) == 10
    # A chain ending in a group has no one result: refused (checked before sending).
    refused = t.replaced_by_a_chain_ending_in_a_group.delay().get(timeout=20)
    assert "Task.replace needs a workflow with one result" in refused
    # celery.accumulate runs on every worker and, as in Celery, registered() leaves it out.
    registered = app.control.inspect(timeout=5).registered() or {}
    assert registered and all("celery.accumulate" not in names for names in registered.values())


def test_a_chord_survives_a_worker_killed_mid_chord(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    doomed = start_worker("--pool", "solo", tasks=TASKS)
    result = chord(t.slow_member.s(i, str(release)) for i in range(3))(t.tsum.s())
    doomed.wait_for_line("MEMBER 0 RUNNING")
    doomed.stop_hard()  # kill -9 in the middle of the chord
    start_worker("--pool", "solo", tasks=TASKS)
    release.touch()
    assert result.get(timeout=30) == 0 + 1 + 2


def test_a_chord_survives_a_broker_kill_9_and_restart(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    release = tmp_path / "release"
    started: list[BrokerProcess | WorkerProcess | Celeriac] = []
    try:
        first = BrokerProcess("--data-dir", data_dir, "--lease-grace", "0.5")
        worker = WorkerProcess(first.address, TASKS, "--pool", "solo")
        app = Celeriac("canvas-durable", broker=first.address, connect_timeout=5)
        started += [first, worker, app]
        header = [
            app.signature(f"{TASKS}.add", (1, 1)),
            app.signature(f"{TASKS}.add", (2, 2)),
            app.signature(f"{TASKS}.slow_member", (2, str(release))),
        ]
        result = chord(header)(app.signature(f"{TASKS}.tsum"))
        worker.wait_for_line("MEMBER 2 RUNNING")  # two members done, one running, body held
        worker.stop_hard()
        first.stop_hard()
        second = BrokerProcess("--data-dir", data_dir, "--lease-grace", "0.5")
        again = Celeriac("canvas-durable-again", broker=second.address, connect_timeout=5)
        started += [second, again]
        second.wait_for_line(r"recovered 4 tasks .* 1 leased, 2 finished, 1 waiting")
        started.append(WorkerProcess(second.address, TASKS, "--pool", "solo"))
        release.touch()
        assert AsyncResult(result.id, app=again).get(timeout=30) == 2 + 4 + 2
    finally:
        for thing in reversed(started):
            if isinstance(thing, Celeriac):
                thing.close()
            else:
                thing.stop()


def test_bad_workflows_are_refused_with_a_typed_reason_and_nothing_is_kept() -> None:
    with (
        BrokerProcess("--max-workflow-depth", "3", "--max-dependencies", "2") as broker,
        Celeriac("canvas-limits", broker=broker.address, connect_timeout=5) as app,
    ):
        add = f"{TASKS}.add"
        spec = app.build_spec(add, (1, 2), {}, {})
        with pytest.raises(InvalidTaskSpec) as unknown:
            app.transport.submit([_depending(spec, ("no-such-task",), "result")])
        assert unknown.value.reason == "UNKNOWN_DEPENDENCY"
        with pytest.raises(InvalidTaskSpec) as cycle:
            app.transport.submit([_depending(spec, (spec.task_id,), "result")])
        assert cycle.value.reason == "DEPENDENCY_CYCLE"
        head = app.signature(add, (1, 1), task_id="head-of-a-refused-chain")
        too_deep = chain(head, *(app.signature(add, (1,)) for _ in range(4)))
        with pytest.raises(LimitExceeded, match="max_workflow_depth=3") as deep:
            too_deep.apply_async()
        assert deep.value.reason == "WORKFLOW_TOO_DEEP"
        with pytest.raises(LimitExceeded, match="max_dependencies=2") as large:
            chord(app.signature(add, (i, i)) for i in range(3))(app.signature(f"{TASKS}.tsum"))
        assert large.value.reason == "WORKFLOW_TOO_LARGE"
        # Each refused batch was all or nothing, and the broker serves on.
        assert AsyncResult(head.options["task_id"], app=app).state == "UNKNOWN"
        assert app.send_task(add, (1, 1)).state == "PENDING"


def _depending(spec: SubmitSpec, parents: tuple[str, ...], mode: str) -> SubmitSpec:
    return dataclasses.replace(spec, depends_on=parents, dependency_mode=mode)
