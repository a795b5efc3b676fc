"""The core's resource limits, each at its edge: names, queues and held bytes."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig
from broker.core.model import Hello, Payload
from broker.errors import HeldBytesExceeded, InvalidName, QueuesExceeded
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


def body(size: int) -> Payload:
    return Payload("application/json", b"1" * size)


@pytest.mark.parametrize(
    "name",
    [
        "tasks.\x00add",
        "tasks.add\nINFO forged",
        "tasks.\x1b[31madd",
        "tasks.\u202eadd",  # right-to-left override
        "tasks.\u200fadd",  # right-to-left mark
        "tasks.\u2066add",  # left-to-right isolate
        "x" * 256,
        "",
    ],
)
def test_task_names_must_be_short_printable_text(name: str) -> None:
    core, _ = make_broker()
    with pytest.raises(InvalidName) as raised:
        core.submit(spec(name))
    assert raised.value.reason == "INVALID_NAME"
    assert "\n" not in str(raised.value) and "\x1b" not in str(raised.value)
    assert core.lifecycle.unfinished == 0


def test_names_in_other_scripts_and_the_longest_name_are_accepted() -> None:
    core, _ = make_broker()
    for name in ("tâches.ajouter", "задачи.сложить", "任务.加", "x" * 255):
        assert core.submit(spec(name)).created


def test_a_worker_hello_with_an_unprintable_id_or_task_name_is_refused() -> None:
    core, _ = make_broker()
    with pytest.raises(InvalidName):
        core.workers.open(Hello(worker_id="w1\nforged"))
    with pytest.raises(InvalidName):
        core.workers.open(Hello(worker_id="w1", task_names=("ok", "bad\x00")))
    with pytest.raises(InvalidName):
        core.workers.open(Hello(worker_id="w1", queues=("bad queue",)))


def test_queues_are_capped_and_idle_ones_are_released_to_make_room() -> None:
    core, _ = make_broker(BrokerConfig(max_queues=3))
    core.submit(spec(queue="a"))
    in_b = core.submit(spec(queue="b")).task_id
    core.submit_many([spec(queue="c"), spec(queue="c")])
    with pytest.raises(QueuesExceeded) as raised:
        core.submit(spec(queue="d"))
    assert raised.value.metadata == {"limit": "max_queues", "max": "3", "value": "4"}
    with pytest.raises(QueuesExceeded):
        core.submit_many([spec(queue="a"), spec(queue="e")])  # all or nothing
    assert core.lifecycle.unfinished == 4
    core.submit(spec(queue="a"))  # known queues take more tasks
    # Queue "b" empties: it is released when a new name needs the room.
    core.revoke([in_b], terminate=False, reason="")
    assert core.submit(spec(queue="d")).created
    assert sorted(stats.name for stats in core.queue_stats()) == ["a", "c", "d"]


def test_a_task_waiting_for_its_eta_holds_its_queue_name() -> None:
    core, clock = make_broker(BrokerConfig(max_queues=1))
    core.submit(spec(queue="later", eta=clock.time() + 60))
    with pytest.raises(QueuesExceeded):
        core.submit(spec(queue="other"))


def test_held_bytes_refuse_submits_past_the_mark_and_come_back_down() -> None:
    core, _ = make_broker(BrokerConfig(max_held_bytes=1000, max_payload_bytes=1000))
    core.submit(spec(args=body(600)))
    with pytest.raises(HeldBytesExceeded) as raised:
        core.submit(spec(args=body(401)))
    assert raised.value.reason == "HELD_BYTES_EXCEEDED"
    assert raised.value.metadata == {"limit": "max_held_bytes", "max": "1000", "value": "1001"}
    with pytest.raises(HeldBytesExceeded):
        core.submit_many([spec(args=body(200)), spec(args=body(201))])
    assert core.lifecycle.held_bytes == 600
    core.submit(spec(args=body(400)))
    assert core.lifecycle.held_bytes == 1000

    session = connect(core, credit=2)
    first, second = taken(session)
    # Running tasks keep their arguments; a finished one gives them up for its result.
    outcome(core, session, first.lease_id, result=body(50))
    assert core.lifecycle.held_bytes == 1000 - 600 + 50
    # A failure is dead-lettered: it keeps its arguments (to be requeued) and its error texts.
    fail(core, session, second.lease_id)
    held = core.lifecycle.held_bytes
    assert held == 50 + 400 + len("boom") + len("Traceback ...")
    core.forget([first.record.task_id, second.record.task_id])
    assert core.lifecycle.held_bytes == 0


def test_expired_results_give_their_bytes_back() -> None:
    config = BrokerConfig(max_held_bytes=500, max_payload_bytes=500, result_ttl=10.0)
    core, clock = make_broker(config)
    session = connect(core, credit=1)
    core.submit(spec(args=body(100)))
    (assignment,) = taken(session)
    outcome(core, session, assignment.lease_id, result=body(450))
    assert core.lifecycle.held_bytes == 450
    with pytest.raises(HeldBytesExceeded):
        core.submit(spec(args=body(100)))
    advance(core, clock, 11.0)
    assert core.lifecycle.held_bytes == 0
    assert core.submit(spec(args=body(100))).created
    assert core.get(assignment.record.task_id) is None


def test_the_default_high_water_mark_is_one_gibibyte() -> None:
    assert CONFIG.max_held_bytes == 1 << 30
