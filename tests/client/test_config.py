"""Broker addresses and the configuration's precedence: defaults < environment < arguments."""

from __future__ import annotations

import pytest

from client import Celeriac, ClientConfig
from client.errors import ConfigurationError
from client.serialization import JSON, PICKLE


def test_environment_overrides_defaults_and_arguments_override_environment() -> None:
    env = {"CELERIAC_BROKER": "envhost:1", "CELERIAC_CONNECT_TIMEOUT": "2.5"}
    assert ClientConfig().broker == "127.0.0.1:7475"
    from_env = ClientConfig.from_env(env)
    assert (from_env.broker, from_env.connect_timeout) == ("envhost:1", 2.5)
    assert ClientConfig.from_env(env, broker="arg:2").broker == "arg:2"


def test_the_app_reads_celeriac_broker_when_no_broker_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERIAC_BROKER", "grpc://fromenv:4000")
    assert Celeriac("t").conf.target == "fromenv:4000"
    assert Celeriac("t", broker="explicit:1").conf.target == "explicit:1"


def test_a_malformed_environment_variable_is_named() -> None:
    with pytest.raises(ConfigurationError, match="CELERIAC_RPC_TIMEOUT"):
        ClientConfig.from_env({"CELERIAC_RPC_TIMEOUT": "soon"})


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="brokr"):
        Celeriac("t", brokr="x:1")


def test_allowing_pickle_also_accepts_it() -> None:
    assert ClientConfig().accept_content == (JSON,)
    assert ClientConfig(allow_pickle=True).accept_content == (JSON, PICKLE)
    assert ClientConfig.from_env({"CELERIAC_ALLOW_PICKLE": "yes"}).allow_pickle


def test_non_positive_timeouts_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="connect_timeout"):
        ClientConfig(connect_timeout=0)
