"""Per-call options: routing precedence, time conversions and validation before sending."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from celeriac.rates import parse_rate
from client import Celeriac, Task
from client.errors import ContentTypeRefused, InvalidTaskSpec, SerializationError
from client.serialization import PICKLE

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def make_app(**config: object) -> Celeriac:
    # A closed address: these tests never send anything.
    return Celeriac("opts", broker="127.0.0.1:1", **config)


def test_queue_precedence_is_call_then_route_then_task_then_app_default() -> None:
    app = make_app(default_queue="fallback", task_routes={"opts.routed": {"queue": "by-route"}})

    @app.task(name="opts.routed", queue="by-task")
    def routed() -> None: ...

    @app.task(name="opts.unrouted", queue="by-task")
    def unrouted() -> None: ...

    @app.task(name="opts.plain")
    def plain() -> None: ...

    assert app.build_spec("opts.routed", (), {}, {"queue": "by-call"}).options.queue == "by-call"
    assert app.build_spec("opts.routed", (), {}, {}).options.queue == "by-route"
    assert app.build_spec("opts.unrouted", (), {}, {}).options.queue == "by-task"
    assert app.build_spec("opts.plain", (), {}, {}).options.queue == "fallback"
    assert routed.name == "opts.routed" and unrouted and plain


def test_routes_match_globs_and_accept_a_plain_queue_name() -> None:
    app = make_app(task_routes={"billing.*": "money", "mail.send": {"queue": "io", "priority": 7}})
    assert app.build_spec("billing.charge", (), {}, {}).options.queue == "money"
    mail = app.build_spec("mail.send", (), {}, {})
    assert (mail.options.queue, mail.options.priority) == ("io", 7)
    assert app.build_spec("other.task", (), {}, {}).options.queue == "default"


def test_countdown_becomes_an_eta_after_now() -> None:
    app = make_app()
    before = datetime.now(UTC)
    spec = app.build_spec("t", (), {}, {"countdown": 30})
    assert spec.options.eta is not None and spec.options.eta >= before + timedelta(seconds=30)


def test_naive_eta_is_taken_as_utc_and_aware_eta_is_converted() -> None:
    app = make_app()
    naive = datetime(2030, 1, 1, 12, 0)
    assert app.build_spec("t", (), {}, {"eta": naive}).options.eta == NOW
    plus_two = datetime(2030, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    eta = app.build_spec("t", (), {}, {"eta": plus_two}).options.eta
    assert eta == NOW and eta is not None and eta.utcoffset() == timedelta(0)


def test_expires_accepts_seconds_or_a_datetime() -> None:
    app = make_app()
    before = datetime.now(UTC)
    seconds = app.build_spec("t", (), {}, {"expires": 60}).options.expires
    assert seconds is not None and seconds >= before + timedelta(seconds=60)
    assert app.build_spec("t", (), {}, {"expires": NOW}).options.expires == NOW


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"countdown": -1}, "countdown must be >= 0"),
        ({"countdown": 1, "eta": NOW}, "not both"),
        ({"countdown": float("inf")}, "countdown"),
        ({"expires": 0}, "expires must be > 0"),
        ({"expires": "tomorrow"}, "expires"),
        ({"eta": "2030-01-01"}, "eta must be a datetime"),
        ({"priority": 10}, "0 to 9"),
        ({"priority": -1}, "0 to 9"),
        ({"priority": True}, "0 to 9"),
        ({"time_limit": 0}, "time_limit"),
        ({"max_retries": -1}, "max_retries"),
        ({"task_id": ""}, "task_id"),
        ({"headers": {"trace": 1}}, "headers"),
        ({"countdwn": 1}, "unknown task option.*countdwn"),
    ],
)
def test_invalid_call_options_are_refused_with_a_clear_message(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidTaskSpec, match=message):
        make_app().build_spec("t", (), {}, options)


def test_task_options_are_validated_when_the_task_is_declared() -> None:
    app = make_app()
    with pytest.raises(InvalidTaskSpec, match="0 to 9"):
        app.task(priority=12)
    with pytest.raises(InvalidTaskSpec, match=r"unknown task option.*retries"):
        app.task(retries=3)


def test_task_options_fill_in_what_the_call_leaves_out() -> None:
    app = make_app()

    @app.task(priority=3, time_limit=5, soft_time_limit=4, ignore_result=True, result_ttl=60)
    def tuned() -> None: ...

    spec = app.build_spec(tuned.name, (), {}, {"priority": 9})
    assert (spec.options.priority, spec.options.time_limit, spec.options.soft_time_limit) == (
        9,
        5.0,
        4.0,
    )
    assert spec.options.ignore_result and spec.options.result_ttl == 60.0
    assert spec.options.max_retries is None  # the worker applies the task's own max_retries


def test_each_call_gets_a_fresh_task_id_unless_one_is_given() -> None:
    app = make_app()
    first, second = (app.build_spec("t", (), {}, {}) for _ in range(2))
    assert first.task_id != second.task_id
    assert app.build_spec("t", (), {}, {"task_id": "mine"}).task_id == "mine"


def test_non_serializable_arguments_fail_before_anything_is_sent() -> None:
    app = make_app()

    @app.task
    def add(x: object, y: object) -> None: ...

    # The broker address is closed: reaching the network would raise BrokerUnavailable instead.
    with pytest.raises(SerializationError, match="object"):
        add.delay(object(), 1)


def test_pickle_needs_the_app_to_allow_it() -> None:
    with pytest.raises(ContentTypeRefused, match="allow_pickle"):
        make_app().build_spec("t", ({1},), {}, {"serializer": "pickle"})
    spec = make_app(allow_pickle=True).build_spec("t", ({1},), {}, {"serializer": "pickle"})
    assert spec.args.content_type == PICKLE


def test_calls_without_options_follow_a_new_configuration_and_re_registered_tasks() -> None:
    app = make_app(default_queue="first")
    assert app.build_spec("t", (), {}, {}).options.queue == "first"
    app.conf.update(default_queue="second")
    assert app.build_spec("t", (), {}, {}).options.queue == "second"

    @app.task(name="t", queue="declared")
    def declared() -> None: ...

    assert app.build_spec("t", (), {}, {}).options.queue == "declared"


def test_a_task_expiry_is_counted_from_each_call() -> None:
    app = make_app()

    @app.task(name="expiring", expires=60)
    def expiring() -> None: ...

    first = app.build_spec("expiring", (), {}, {}).options.expires
    assert first is not None
    before_second = datetime.now(UTC)
    second = app.build_spec("expiring", (), {}, {}).options.expires
    assert second is not None and second >= before_second + timedelta(seconds=60) >= first


def test_celery_publishing_options_route_by_queue_or_are_refused_by_name() -> None:
    app = make_app()
    assert app.build_spec("t", (), {}, {"routing_key": "math"}).options.queue == "math"
    both = {"routing_key": "math", "queue": "io"}
    assert app.build_spec("t", (), {}, both).options.queue == "io"
    retrying = {"retry": True, "retry_policy": {"max_retries": 3}}
    assert app.build_spec("t", (), {}, retrying).options.queue == "default"
    for name, why in [("link", "callbacks"), ("exchange", "routes by queue")]:
        with pytest.raises(InvalidTaskSpec, match=f"option '{name}' is not supported: .*{why}"):
            app.build_spec("t", (), {}, {name: "x"})


def test_celery_task_options_are_accepted_or_refused_with_the_reason() -> None:
    app = make_app()

    @app.task(acks_late=True, track_started=True, throws=(KeyError,), retry_kwargs={"countdown": 1})
    def celery_style() -> None: ...

    assert celery_style.options.throws == (KeyError,)
    with pytest.raises(InvalidTaskSpec, match=r"'typing' is not supported"):
        app.task(typing=True)
    with pytest.raises(InvalidTaskSpec, match="retry_kwargs accepts max_retries and countdown"):
        app.task(retry_kwargs={"interval": 3})


def test_a_base_class_gives_option_defaults_that_the_decorator_overrides() -> None:
    app = make_app()

    assert app.Task is Task  # Celery's spelling; mypy needs the import

    class Patient(Task):
        max_retries = 7
        queue = "slow"
        autoretry_for = (OSError,)

    class MorePatient(Patient):
        max_retries = 9

    @app.task(base=MorePatient, queue="io")
    def fetch() -> None: ...

    assert isinstance(fetch, Patient)
    assert (fetch.options.max_retries, fetch.options.queue) == (9, "io")
    assert fetch.options.autoretry_for == (OSError,)
    assert app.build_spec(fetch.name, (), {}, {}).options.queue == "io"
    with pytest.raises(InvalidTaskSpec, match=r"base must be a subclass of client\.Task"):
        app.task(base=object)


def test_rate_limits_take_celerys_forms_and_a_bad_one_fails_at_declaration() -> None:
    app = make_app()
    for rate in ("10/s", "10/m", "10/h", 5, 2.5, None, "0"):
        app.task(name=f"t{rate}", rate_limit=rate)(lambda: None)
    assert parse_rate("10/m") == pytest.approx(10 / 60)
    assert parse_rate("3") == 3.0 and parse_rate("") == 0.0 and parse_rate("0/h") == 0.0
    for bad in ("ten/m", "10/d", "-1/s", True, [10]):
        with pytest.raises(InvalidTaskSpec, match="rate limit"):
            app.task(name="bad", rate_limit=bad)


def test_a_concurrency_key_and_limit_go_on_the_spec() -> None:
    app = make_app()

    @app.task(concurrency_limit=2)
    def per_tenant() -> None: ...

    spec = app.build_spec(per_tenant.name, (), {}, {"concurrency_key": "tenant:7"})
    assert (spec.options.concurrency_key, spec.options.concurrency_limit) == ("tenant:7", 2)
    override = app.build_spec(per_tenant.name, (), {}, {"concurrency_limit": 5})
    assert (override.options.concurrency_key, override.options.concurrency_limit) == ("", 5)
    assert app.build_spec("plain", (), {}, {}).options.concurrency_limit == 0
    with pytest.raises(InvalidTaskSpec, match="needs a concurrency_limit"):
        app.build_spec("plain", (), {}, {"concurrency_key": "k"})
    with pytest.raises(InvalidTaskSpec, match="concurrency_limit must be an int >= 1"):
        app.task(name="zero", concurrency_limit=0)
