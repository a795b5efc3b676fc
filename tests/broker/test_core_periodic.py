"""Periodic tasks at the broker, on the injected clock: ticks, crontab, upserts, missed ticks."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from broker.clock import ManualClock
from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.model import Phase, TaskRecord, TaskState
from broker.core.periodic import (
    ENTRY_HEADER,
    MISSED_HEADER,
    RETRY_REFUSED,
    TICK_HEADER,
    PeriodicEntry,
    PeriodicSpec,
    run_id,
)
from broker.errors import InvalidArgument
from broker.journal.rows import decode_periodic, encode_periodic
from tests.broker.core_support import CONFIG, advance, connect, outcome, spec, taken

SEVEN_AM = datetime(2026, 12, 3, 7, 0, tzinfo=UTC).timestamp()


def make(start: float = SEVEN_AM - 30) -> tuple[Broker, ManualClock]:
    clock = ManualClock(start_wall=start)
    return Broker(CONFIG, clock), clock


def runs(core: Broker, name: str = "tasks.add") -> list[TaskRecord]:
    """Every task the broker holds of that name, oldest first."""
    records = [r for r in core.lifecycle.tasks.values() if r.spec.name == name]
    return sorted(records, key=lambda record: record.spec.headers[TICK_HEADER])  # ISO sorts


def every(seconds: float, name: str = "tick", **template: object) -> PeriodicSpec:
    return PeriodicSpec(name, spec("tasks.add", **template), interval=seconds)


def test_an_interval_entry_runs_once_per_tick_from_when_it_was_declared() -> None:
    core, clock = make()
    core.declare_periodic([every(10.0, queue="beat")])
    advance(core, clock, 9.9)
    assert runs(core) == []
    advance(core, clock, 0.1)
    (first,) = runs(core)
    assert first.spec.queue == "beat"
    assert first.spec.headers[ENTRY_HEADER] == "tick"
    assert first.task_id == run_id("tick", clock.time())
    advance(core, clock, 10.0)
    advance(core, clock, 5.0)
    assert len(runs(core)) == 2
    entry = core.periodic.entries["tick"]
    assert entry.last_run == clock.time() - 5.0
    assert entry.next_tick == clock.time() + 5.0


def test_a_crontab_entry_runs_at_its_minute_in_utc() -> None:
    core, clock = make()
    core.declare_periodic([PeriodicSpec("morning", spec(), crontab="0 7 * * *")])
    assert core.periodic.entries["morning"].next_tick == SEVEN_AM
    advance(core, clock, 29.0)
    assert runs(core) == []
    advance(core, clock, 1.0)
    (run,) = runs(core)
    assert run.spec.headers[TICK_HEADER] == "2026-12-03T07:00:00.000+00:00"
    advance(core, clock, 3600.0)
    assert len(runs(core)) == 1
    assert core.periodic.entries["morning"].next_tick == SEVEN_AM + 86400


def test_a_crontab_in_a_time_zone_keeps_its_wall_time_across_a_daylight_saving_change() -> None:
    # 9:00 in Paris: 08:00 UTC in winter (CET), 07:00 UTC from 29 March 2026 (CEST).
    core, clock = make(datetime(2026, 3, 27, 12, 0, tzinfo=UTC).timestamp())
    core.declare_periodic(
        [PeriodicSpec("paris", spec(), crontab="0 9 * * *", timezone="Europe/Paris")]
    )
    for _ in range(3):
        advance(core, clock, 86400.0)
    ticks = [run.spec.headers[TICK_HEADER] for run in runs(core)]
    assert ticks == [
        "2026-03-28T08:00:00.000+00:00",
        "2026-03-29T07:00:00.000+00:00",
        "2026-03-30T07:00:00.000+00:00",
    ]
    # A wall time the clocks jump over (02:30 on 29 March) runs once, at the jump.
    core, clock = make(datetime(2026, 3, 28, 12, 0, tzinfo=UTC).timestamp())
    core.declare_periodic(
        [PeriodicSpec("gap", spec(), crontab="30 2 * * *", timezone="Europe/Paris")]
    )
    advance(core, clock, 86400.0)
    (run,) = runs(core)
    assert run.spec.headers[TICK_HEADER] == "2026-03-29T01:00:00.000+00:00"  # 03:00 CEST


def test_changing_an_entrys_time_zone_reschedules_it() -> None:
    core, _ = make()
    core.declare_periodic([PeriodicSpec("m", spec(), crontab="0 7 * * *")])
    core.declare_periodic([PeriodicSpec("m", spec(), crontab="0 7 * * *", timezone="Asia/Tokyo")])
    # 07:00 in Tokyo is 22:00 UTC the day before: the next one is tonight.
    assert core.periodic.entries["m"].next_tick == SEVEN_AM + 15 * 3600


def test_declaring_the_same_entry_again_changes_nothing_and_new_arguments_keep_the_schedule() -> (
    None
):
    core, clock = make()
    core.declare_periodic([every(10.0)])
    advance(core, clock, 6.0)
    core.declare_periodic([every(10.0)])  # a second worker connects
    advance(core, clock, 4.0)
    assert len(runs(core)) == 1
    core.declare_periodic([every(10.0, priority=5)])
    advance(core, clock, 10.0)
    assert [run.spec.priority for run in runs(core)] == [0, 5]
    core.declare_periodic([every(3.0, priority=5)])  # rescheduled: counts from now
    advance(core, clock, 2.9)
    assert len(runs(core)) == 2
    advance(core, clock, 0.1)
    assert len(runs(core)) == 3


def test_a_run_refused_by_a_full_broker_stays_owed_and_goes_once_there_is_room() -> None:
    clock = ManualClock(start_wall=SEVEN_AM - 30)
    core = Broker(dataclasses.replace(CONFIG, max_queued=1), clock)
    core.submit(spec("tasks.other", task_id="filler"))
    core.declare_periodic([every(1.0)])
    advance(core, clock, 1.0)
    assert runs(core) == []  # QueueFull: not sent, and not counted as done
    assert core.periodic.entries["tick"].last_run is None
    advance(core, clock, RETRY_REFUSED)
    assert runs(core) == []
    session = connect(core, credit=1)
    (filler,) = taken(session)
    outcome(core, session, filler.lease_id)  # the filler finished: room again
    advance(core, clock, RETRY_REFUSED)
    (run,) = runs(core)
    assert run.spec.headers[MISSED_HEADER] == "2"  # the latest due tick, for all three owed
    assert core.periodic.entries["tick"].last_run == clock.time()


def test_a_removed_entry_stops() -> None:
    core, clock = make()
    core.declare_periodic([every(1.0)])
    assert core.periodic.remove("tick")
    assert not core.periodic.remove("tick")
    advance(core, clock, 5.0)
    assert runs(core) == []


def test_after_a_restart_missed_ticks_give_one_catch_up_run_for_the_latest() -> None:
    core, clock = make()
    # As journaled: declared an hour ago, last run 40 minutes ago, every 5 minutes.
    now = clock.time()
    entry = PeriodicEntry(every(300.0), now - 3600, now - 2400, now - 2400)
    core.periodic.restore(entry)
    core.fire_timers()
    (catch_up,) = runs(core)
    assert catch_up.spec.headers[MISSED_HEADER] == "7"  # 8 ticks were due; the latest ran
    assert entry.done_until == now  # the latest tick at or before now (now is one)
    advance(core, clock, 299.0)
    assert len(runs(core)) == 1
    advance(core, clock, 1.0)
    assert len(runs(core)) == 2
    assert MISSED_HEADER not in runs(core)[1].spec.headers


def test_a_catch_up_older_than_the_entrys_expiry_never_runs() -> None:
    core, clock = make()
    now = clock.time()
    # The latest missed tick was 50 s ago, and runs expire 30 s after their tick.
    stale = PeriodicSpec("stale", spec(), interval=300.0, expires_ms=30_000)
    core.periodic.restore(PeriodicEntry(stale, now - 3650, now - 2450, None))
    core.fire_timers()
    core.fire_timers()  # its expiry, armed in the past, applies on the next pass
    (run,) = runs(core)
    assert run.state is TaskState.REVOKED
    assert run.error is not None and run.error.type == "TaskExpired"


def test_a_resubmitted_tick_is_the_same_task() -> None:
    core, clock = make()
    tick = clock.time()
    core.periodic.restore(PeriodicEntry(every(10.0), tick - 20, tick - 10, None))
    core.fire_timers()
    (run,) = runs(core)
    # The journal lost the entry's progress but kept the run: the same tick dedups to it.
    core.periodic.restore(PeriodicEntry(every(10.0), tick - 20, tick - 10, None))
    core.fire_timers()
    assert runs(core) == [run]
    assert run.phase is Phase.QUEUED


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (PeriodicSpec("x", spec()), "exactly one of interval_seconds and crontab"),
        (PeriodicSpec("x", spec(), interval=1.0, crontab="* * * * *"), "exactly one"),
        (PeriodicSpec("x", spec(), interval=0.001), "at least"),
        (PeriodicSpec("x", spec(), crontab="61 * * * *"), "not a five-field cron"),
        (PeriodicSpec("x", spec(), crontab="* * * * * *"), "not a five-field cron"),
        (PeriodicSpec("x", spec(task_id="fixed"), interval=1.0), "may not set task_id"),
        (PeriodicSpec("x", spec(priority=12), interval=1.0), "periodic task 'x': priority"),
        (PeriodicSpec("", spec(), interval=1.0), "PeriodicTask.name is required"),
        (
            PeriodicSpec("x", spec(), crontab="* * * * *", timezone="Mars/Olympus"),
            "unknown time zone 'Mars/Olympus'",
        ),
        (PeriodicSpec("x", spec(), crontab="* * * * *", timezone="../etc"), "unknown time zone"),
        (PeriodicSpec("x", spec(), interval=1.0, timezone="UTC"), "applies to a crontab only"),
    ],
)
def test_invalid_entries_are_refused_and_none_of_the_batch_is_kept(
    bad: PeriodicSpec, message: str
) -> None:
    core, _ = make()
    with pytest.raises(InvalidArgument, match=message):
        core.declare_periodic([every(1.0, name="fine"), bad])
    assert core.periodic.entries == {}


def test_an_entry_and_its_progress_survive_the_journal_row() -> None:
    core, clock = make()
    template = spec(queue="beat", headers={"h": "v"}, concurrency_limit=1)
    core.declare_periodic(
        [
            PeriodicSpec(
                "row", template, crontab="*/5 * * * *", expires_ms=9, timezone="Asia/Kathmandu"
            )
        ]
    )
    advance(core, clock, 3600.0)
    entry = core.periodic.entries["row"]
    row = encode_periodic(entry)
    back = decode_periodic(row)
    assert back.spec == entry.spec and back.spec.timezone == "Asia/Kathmandu"
    # A row written before entries had a time zone reads as UTC.
    older = json.loads(row)
    del older["timezone"]
    assert decode_periodic(json.dumps(older)).spec.timezone == ""
    assert (back.anchor, back.done_until, back.last_run) == (
        entry.anchor,
        entry.done_until,
        entry.last_run,
    )
    with pytest.raises(ValueError, match="periodic entry: undecodable row"):
        decode_periodic('{"name": 1}')


def test_memory_only_mode_notes_nothing_for_a_journal() -> None:
    core = Broker(BrokerConfig(), ManualClock())
    core.declare_periodic([every(1.0)])
    assert core.lifecycle.periodic_changes is None


def test_a_tick_recomputed_after_a_catch_up_is_the_same_tick_not_a_second_one() -> None:
    # Values where a tick computed by division and one computed by addition round apart.
    anchor, done_until, now = 1796281529.984, 1796281537.5839999, 1796281540.4362307
    core, clock = make(start=now)
    core.periodic.restore(PeriodicEntry(every(0.2), anchor, done_until, None))
    core.fire_timers()
    for _ in range(20):
        advance(core, clock, 0.05)
    ticks = [run.spec.headers[TICK_HEADER] for run in runs(core)]
    assert len(ticks) == len(set(ticks)) == 1 + 5  # the catch-up, then one per 0.2 s


def test_a_follower_runs_no_tick_until_it_leads_from_the_stored_progress() -> None:
    leader, clock = make()
    leader.declare_periodic([every(10.0)])
    advance(leader, clock, 20.0)
    stored = decode_periodic(encode_periodic(leader.periodic.entries["tick"]))
    follower = Broker(CONFIG, clock)
    follower.periodic.follow()
    follower.declare_periodic([every(10.0)])  # its own worker declares it too
    follower.periodic.sync("tick", stored)  # the leader's copy, read after its NOTIFY
    advance(follower, clock, 30.0)
    assert runs(follower) == []
    follower.periodic.lead([stored])  # the leader died two ticks ago
    advance(follower, clock, 0.0)
    (catch_up,) = runs(follower)
    assert catch_up.spec.headers[MISSED_HEADER] == "2"
    assert catch_up.task_id not in {run.task_id for run in runs(leader)}
    assert catch_up.task_id == run_id("tick", stored.anchor + 5 * 10.0)


def test_the_leader_takes_new_and_changed_entries_from_the_others_and_keeps_its_progress() -> None:
    core, clock = make()
    core.declare_periodic([every(10.0)])
    advance(core, clock, 10.0)
    elsewhere = PeriodicEntry(every(10.0), clock.time() - 3.0, clock.time() - 3.0, None)
    core.periodic.sync("tick", elsewhere)  # the same definition: the leader's schedule stays
    assert core.periodic.entries["tick"].anchor == clock.time() - 10.0
    core.periodic.sync(
        "other", PeriodicEntry(every(5.0, "other"), clock.time(), clock.time(), None)
    )
    advance(core, clock, 5.0)
    assert len(runs(core)) == 2  # "other" runs here
    core.periodic.sync("tick", PeriodicEntry(every(10.0, priority=3), 0.0, 0.0, None))
    assert core.periodic.entries["tick"].spec.template.priority == 3
    core.periodic.sync("other", None)  # removed on another broker
    assert "other" not in core.periodic.entries
    advance(core, clock, 5.0)
    assert [run.spec.priority for run in runs(core)][-1] == 3
