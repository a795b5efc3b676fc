"""One validation per configuration model: the same answer from the environment, flags and code."""

from __future__ import annotations

import dataclasses
import re

import pytest

from broker.config import BrokerConfig
from celeriac.settings import InvalidSetting
from client import Celeriac, ClientConfig
from client.errors import ConfigurationError as ClientConfigurationError
from worker.config import WorkerConfig
from worker.errors import ConfigurationError as WorkerConfigurationError


def test_a_bad_value_is_named_the_way_it_was_given() -> None:
    with pytest.raises(InvalidSetting, match=r"^port 99999 is out of range \(0-65535\)$"):
        BrokerConfig(port=99999)
    with pytest.raises(InvalidSetting, match=r"^CELERIAC_BROKER_PORT=99999 is out of range"):
        BrokerConfig.from_env({"CELERIAC_BROKER_PORT": "99999"})
    with pytest.raises(InvalidSetting, match=r"^--port 99999 is out of range"):
        BrokerConfig.from_env({}, values={"port": 99999}, labels={"port": "--port"})


def test_flags_and_variables_are_checked_together() -> None:
    env = {"CELERIAC_BROKER_PING_INTERVAL": "1"}
    good = BrokerConfig.from_env(env, values={"ping_interval": 3.0, "ping_timeout": 9.0})
    assert (good.ping_interval, good.ping_timeout) == (3.0, 9.0)
    with pytest.raises(InvalidSetting, match="ping_timeout 1 must be greater than the ping"):
        BrokerConfig.from_env(env, values={"ping_timeout": 1.0})


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"port": -1}, "port -1 is out of range"),
        ({"port": 0}, None),
        ({"max_results": -5}, "max_results -5 must be at least 1"),
        ({"result_ttl": -1.0}, "result_ttl -1 must be greater than 0"),
        ({"ping_interval": 0.0}, "ping_interval 0 must be greater than 0"),
        ({"ping_interval": 6.0}, "ping_timeout 6 must be greater than the ping interval (6)"),
        ({"max_message_bytes": 1024 * 1024}, "must be greater than the max payload bytes"),
        ({"log_level": "loud"}, "log_level loud is not a log level"),
        ({"log_level": "WARNING"}, None),
        ({"host": "::"}, None),
        ({"host": "[::1]"}, None),
        ({"host": ""}, "host '' is not a host name"),
    ],
)
def test_broker_rules(changes: dict[str, object], problem: str | None) -> None:
    if problem is None:
        assert dataclasses.replace(BrokerConfig(), **changes)  # type: ignore[arg-type]
        return
    with pytest.raises(InvalidSetting, match=re.escape(problem)):
        dataclasses.replace(BrokerConfig(), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"concurrency": 0}, "concurrency 0 must be at least 1"),
        ({"pool": "fork"}, "pool fork is not one of process, thread, async, solo"),
        ({"queues": ()}, "queues '' must not be empty"),
        ({"loglevel": "verbose"}, "loglevel verbose is not a log level"),
        ({"time_limit": 0.0}, "time_limit 0 must be greater than 0"),
        ({"shutdown_grace": -1.0}, "shutdown_grace -1 must not be negative"),
        ({"prefetch_max": -1}, "prefetch_max -1 must not be negative"),
        ({"reconnect_initial": 3.0}, "reconnect_max 2 must be at least the reconnect initial (3)"),
    ],
)
def test_worker_rules(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(WorkerConfigurationError, match=re.escape(problem)):
        WorkerConfig(**changes)  # type: ignore[arg-type]


def test_the_worker_reads_its_variables() -> None:
    env = {
        "CELERIAC_BROKER": "grpcs://b:1",
        "CELERIAC_LOGLEVEL": "debug",
        "CELERIAC_WORKER_QUEUES": "a, b",
        "CELERIAC_WORKER_ALLOW_PICKLE": "yes",
        "CELERIAC_WORKER_TIME_LIMIT": "2.5",
    }
    config = WorkerConfig.from_env(env)
    assert (config.broker, config.loglevel, config.queues) == ("grpcs://b:1", "debug", ("a", "b"))
    assert (config.allow_pickle, config.time_limit) == (True, 2.5)
    with pytest.raises(WorkerConfigurationError, match="CELERIAC_WORKER_ALLOW_PICKLE=maybe"):
        WorkerConfig.from_env({"CELERIAC_WORKER_ALLOW_PICKLE": "maybe"})


def test_the_client_gives_the_same_answers_from_the_environment_and_arguments() -> None:
    with pytest.raises(ClientConfigurationError, match=r"^CELERIAC_RPC_TIMEOUT=-1 must be greater"):
        ClientConfig.from_env({"CELERIAC_RPC_TIMEOUT": "-1"})
    with pytest.raises(ClientConfigurationError, match=r"^rpc_timeout -1 must be greater than 0"):
        Celeriac("t", rpc_timeout=-1)
    with pytest.raises(ClientConfigurationError, match=r"^broker h:99999 has the port 99999"):
        Celeriac("t", broker="h:99999")
    with pytest.raises(ClientConfigurationError, match=r"^group_chunk_size 0 must be at least 1"):
        Celeriac("t", group_chunk_size=0)


def test_every_configuration_error_is_an_invalid_setting_and_a_value_error() -> None:
    for error in (ClientConfigurationError, WorkerConfigurationError):
        assert issubclass(error, InvalidSetting)
        assert issubclass(error, ValueError)
