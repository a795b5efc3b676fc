"""The events stream, through `python -m broker events` and AdminService.Events on a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest

from broker.core.model import DEFAULT_QUEUE
from celeriac.v1 import admin_pb2, admin_pb2_grpc, client_pb2, client_pb2_grpc, tasks_pb2
from client import Celeriac
from tests.e2e import tasks
from tests.support import BrokerProcess, LoggedProcess, WorkerProcess, run_python


def tail_events(broker: BrokerProcess, *args: str) -> LoggedProcess:
    """`python -m broker events --json ...`, returned once it is subscribed."""
    tail = LoggedProcess(["-m", "broker", "events", "--broker", broker.address, "--json", *args])
    tail.wait_for_line("listening for events")
    return tail


def events_of(tail: LoggedProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in tail.output.splitlines() if line.startswith("{")]


def test_one_task_life_arrives_in_order_with_worker_events(
    broker_process: BrokerProcess,
    app: Celeriac,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    with tail_events(broker_process) as tail:
        worker = start_worker()
        assert tasks.add.delay(2, 3).get(timeout=20) == 5
        tail.wait_for_line('"kind": "succeeded"')
        worker.stop()
        tail.wait_for_line('"kind": "worker_offline"')
        events = events_of(tail)

    online = [e for e in events if e["kind"] == "worker_online"]
    assert len(online) == 1 and online[0]["concurrency"] and online[0]["worker_id"]
    life = [e for e in events if e["task_id"]]
    assert [e["kind"] for e in life] == ["accepted", "queued", "leased", "started", "succeeded"]
    assert {e["task_name"] for e in life} == {"tests.e2e.tasks.add"}
    assert {e["queue"] for e in life} == {DEFAULT_QUEUE}
    assert life[-1]["worker_id"] == online[0]["worker_id"]
    assert float(life[-1]["runtime"]) > 0  # type: ignore[arg-type]
    assert [e["at"] for e in life] == sorted(e["at"] for e in life)  # type: ignore[type-var]


def test_filters_by_task_name_kind_and_queue(
    broker_process: BrokerProcess,
    app: Celeriac,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    failures = tail_events(broker_process, "--task", "tests.e2e.tasks.fail", "--kind", "failed")
    elsewhere = tail_events(broker_process, "--queue", "nowhere")
    with failures, elsewhere:
        assert tasks.add.delay(1, 1).get(timeout=20) == 2
        with pytest.raises(Exception, match="boom"):
            tasks.fail.delay("boom").get(timeout=20)
        parked = tasks.add.apply_async((1, 2), queue="nowhere")
        failures.wait_for_line('"kind": "failed"')
        elsewhere.wait_for_line('"kind": "queued"')
        only_failed = events_of(failures)
        only_nowhere = events_of(elsewhere)

    assert [(e["kind"], e["task_name"]) for e in only_failed] == [
        ("failed", "tests.e2e.tasks.fail")
    ]
    assert [(e["kind"], e["task_id"]) for e in only_nowhere] == [
        ("accepted", parked.id),
        ("queued", parked.id),
    ]


def test_an_unknown_kind_is_refused_by_name(broker_process: BrokerProcess) -> None:
    done = run_python("-m", "broker", "events", "--broker", broker_process.address, "--kind", "x")
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr and "unknown event kind x" in done.stderr
    assert "Traceback" not in broker_process.output


def test_heartbeats_carry_the_workers_load() -> None:
    with BrokerProcess("--ping-interval", "0.2", "--ping-timeout", "2") as broker:
        worker = WorkerProcess(broker.address, "tests.e2e.tasks", "--concurrency", "2")
        with worker, tail_events(broker, "--kind", "worker_heartbeat") as tail:
            tail.wait_for_line('"kind": "worker_heartbeat"')
            beat = events_of(tail)[0]
    assert beat["concurrency"] == 2 and beat["active"] == 0 and beat["worker_id"]


def test_a_reader_that_never_reads_does_not_stall_submits_and_learns_what_it_missed() -> None:
    tasks_count = 3_000
    with BrokerProcess("--events-buffer", "100") as broker:
        # A small fixed receive window, so the transport cannot hide the reader's lag.
        options = [("grpc.http2.bdp_probe", 0), ("grpc.max_receive_message_length", 1 << 20)]
        with grpc.insecure_channel(broker.address, options=options) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            stream = admin.Events(admin_pb2.EventsRequest(queues=["flood"]), timeout=50)
            stream.initial_metadata()  # subscribed; nothing is read from here on
            submit = client_pb2_grpc.TaskServiceStub(channel)
            for start in range(0, tasks_count, 1_000):
                specs = [
                    tasks_pb2.TaskSpec(name="t", queue="flood", task_id=f"f{i}")
                    for i in range(start, start + 1_000)
                ]
                submit.SubmitMany(client_pb2.SubmitManyRequest(tasks=specs), timeout=10)
            # Every event was delivered or counted as dropped: accepted and queued per task.
            seen, dropped = 0, 0
            for event in stream:
                seen += 1 + event.dropped
                dropped += event.dropped
                if seen >= 2 * tasks_count:
                    break
    assert seen == 2 * tasks_count
    assert dropped > 0
