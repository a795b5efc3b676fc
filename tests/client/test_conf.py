"""``app.conf`` and ``config_from_object``: Celery's ways of setting an app up."""

from __future__ import annotations

import logging

import pytest

from client import Celeriac
from client.errors import ConfigurationError
from tests.client import celeryconfig_sample


def make_app() -> Celeriac:
    return Celeriac("conf", broker="127.0.0.1:1")


def test_conf_reads_and_updates_by_field_or_by_celery_name() -> None:
    app = make_app()
    app.conf.update(task_default_queue="low", connect_timeout=2)
    assert (app.conf.default_queue, app.conf.task_default_queue) == ("low", "low")
    app.conf.task_always_eager = True
    assert app.config.task_always_eager and app.conf.connect_timeout == 2
    assert app.build_spec("t", (), {}, {}).options.queue == "low"
    assert app.conf.get("no_such_thing", "fallback") == "fallback"


def test_a_bad_or_unknown_setting_is_refused_and_changes_nothing() -> None:
    app = make_app()
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        app.conf.update(default_queue="other", connect_timeout=-1)
    assert app.conf.default_queue == "default"
    with pytest.raises(ConfigurationError, match="unknown setting 'conect_timeout'"):
        app.conf.conect_timeout = 3


def test_a_celery_configuration_module_loads_and_says_what_it_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    with caplog.at_level(logging.WARNING, logger="client.conf"):
        app.config_from_object("tests.client.celeryconfig_sample")
    assert app.conf.broker == "grpc://broker.internal:7475"
    assert app.conf.target == "broker.internal:7475"
    assert app.conf.default_queue == "celery"
    assert app.conf.task_routes == {"proj.reports.*": {"queue": "reports"}}
    assert (app.conf.timezone, app.conf.enable_utc) == ("Europe/Paris", True)
    (warning,) = caplog.records
    assert "result_backend (results are kept by the broker)" in warning.getMessage()
    assert "worker_send_task_events" in warning.getMessage()


def test_a_namespaced_settings_object_as_django_projects_use() -> None:
    app = make_app()
    app.config_from_object("tests.client.celeryconfig_sample:DjangoSettings", namespace="CELERY")
    assert (app.conf.target, app.conf.task_always_eager) == ("localhost:9999", True)
    other = make_app()
    other.config_from_object(celeryconfig_sample.DjangoSettings(), namespace="CELERY")
    assert other.conf.broker_url == "localhost:9999"


def test_a_source_that_does_not_import_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"cannot load settings from 'no\.such\.module'"):
        make_app().config_from_object("no.such.module")
