"""Periodic tasks declared the Celery way: beat_schedule, add_periodic_task, crontab."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from client import Celeriac
from client.codec import periodic_task
from client.errors import ConfigurationError, InvalidTaskSpec
from client.periodic import entries_of
from client.schedules import crontab, schedule


def make_app() -> Celeriac:
    return Celeriac("periodic-test", broker="127.0.0.1:1")


def test_celerys_schedule_forms_all_declare_entries() -> None:
    app = make_app()

    @app.task(expires=30, queue="beat")
    def cleanup(scope: str, *, hard: bool = False) -> None: ...

    app.conf.beat_schedule = {
        "float": {"task": cleanup.name, "schedule": 30.0, "args": ("all",)},
        "delta": {"task": cleanup.name, "schedule": timedelta(minutes=5), "args": ["db"]},
        "freq": {"task": cleanup.name, "schedule": schedule(run_every=90), "args": ("x",)},
        "cron": {
            "task": cleanup.name,
            "schedule": crontab(minute=30, hour=7, day_of_week="mon-fri"),
            "args": ("y",),
            "kwargs": {"hard": True},
            "options": {"priority": 5, "expires": timedelta(minutes=1)},
        },
    }
    entries = {entry.name: entry for entry in entries_of(app)}
    assert entries["float"].interval == 30.0
    assert entries["delta"].interval == 300.0
    assert entries["freq"].interval == 90.0
    cron = entries["cron"]
    assert (cron.interval, cron.crontab) == (0.0, "30 7 * * mon-fri")
    assert cron.spec.options.priority == 5 and cron.spec.options.queue == "beat"
    assert cron.expires == 60.0 and entries["float"].expires == 30.0  # the task's own expires
    message = periodic_task(cron)
    assert message.task.name == cleanup.name and not message.task.task_id
    assert not message.task.HasField("expires") and message.expires_ms == 60_000
    assert message.task.args.body == b'[["y"],{"hard":true}]'


def test_add_periodic_task_in_on_after_configure_as_celery_code_does() -> None:
    app = make_app()
    sent: list[Any] = []

    @app.task
    def ping(word: str) -> None: ...

    @app.on_after_configure.connect
    def setup(sender: Celeriac, **kwargs: Any) -> None:
        sent.append(sender)
        sender.add_periodic_task(10.0, ping.s("hello"), name="ping every 10 s")
        sender.add_periodic_task(crontab(minute=0), ping.s("hour"), queue="hourly")

    names = [entry.name for entry in entries_of(app)]
    entries_of(app)
    assert sent == [app]  # sent once
    assert names == ["ping every 10 s", f"{ping.name}('hour')"]  # unnamed: repr, as Celery
    assert app.conf.beat_schedule["ping every 10 s"]["args"] == ("hello",)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": "t", "schedule": "often"}, "seconds, a timedelta, schedule"),
        ({"task": "t", "schedule": -1}, "must be positive"),
        ({"schedule": 1.0}, "'task' must be a task name"),
        ({"task": "t", "schedule": 1.0, "relative": True}, "unknown key"),
        ({"task": "t", "schedule": 1.0, "options": {"countdown": 3}}, "come from each tick"),
        ({"task": "t", "schedule": 1.0, "options": {"link": "x"}}, "'link' is not supported"),
        ({"task": "t", "schedule": 1.0, "options": {"expires": "soon"}}, "'expires' must be"),
    ],
)
def test_a_malformed_entry_names_itself_and_what_is_wrong(
    entry: dict[str, Any], message: str
) -> None:
    app = make_app()
    app.conf.beat_schedule = {"bad one": entry}
    with pytest.raises(InvalidTaskSpec, match=f"periodic task 'bad one': .*{message}"):
        entries_of(app)


def test_a_crontab_is_checked_when_it_is_made() -> None:
    assert crontab().expression == "* * * * *"
    assert crontab(minute=[0, 30], hour="*/2").expression == "0,30 */2 * * *"
    with pytest.raises(InvalidTaskSpec, match="not a valid cron schedule"):
        crontab(minute=61)
    with pytest.raises(InvalidTaskSpec, match="nowfun not supported"):
        crontab(nowfun=lambda: None)


def test_crontabs_are_read_in_the_apps_time_zone_as_celery_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app()
    app.conf.beat_schedule = {"cron": {"task": "t.x", "schedule": crontab(minute=0, hour=9)}}
    app.conf.beat_schedule["every"] = {"task": "t.x", "schedule": 10.0}
    (cron, every) = entries_of(app)
    assert cron.timezone == "" and every.timezone == ""  # enable_utc: UTC
    app.conf.timezone = "Europe/Paris"
    cron, every = entries_of(app)
    assert periodic_task(cron).timezone == "Europe/Paris" and every.timezone == ""
    # enable_utc off and no timezone: this machine's zone, by its IANA name.
    app.conf.update(timezone="", enable_utc=False)
    monkeypatch.setenv("TZ", ":America/New_York")
    assert entries_of(app)[0].timezone == "America/New_York"
    # A machine whose zone has no name (no TZ, a copied /etc/localtime) is told what to set.
    monkeypatch.setattr("client.periodic._local_zone_name", lambda: None)
    with pytest.raises(InvalidTaskSpec, match=r"set app\.conf\.timezone"):
        entries_of(app)
    with pytest.raises(ConfigurationError, match="not a known IANA time zone"):
        app.conf.timezone = "Europe/Atlantis"
