"""BrokerConfig: defaults, environment overrides, clear errors."""

from __future__ import annotations

import pytest

from broker.config import BrokerConfig


def test_environment_overrides_defaults_and_flags_override_environment() -> None:
    env = {
        "CELERIAC_BROKER_RESULT_TTL": "60",
        "CELERIAC_BROKER_PORT": "9000",
        "CELERIAC_BROKER_HOST": "0.0.0.0",
    }
    config = BrokerConfig.from_env(env)
    assert (config.result_ttl, config.port, config.host) == (60.0, 9000, "0.0.0.0")
    assert config.replace(port=0, host=None).port == 0
    assert config.replace(port=0, host=None).host == "0.0.0.0"


def test_a_malformed_variable_names_itself() -> None:
    with pytest.raises(ValueError, match="CELERIAC_BROKER_MAX_QUEUED=lots is not a valid int"):
        BrokerConfig.from_env({"CELERIAC_BROKER_MAX_QUEUED": "lots"})


def test_the_defaults_are_the_documented_ones() -> None:
    config = BrokerConfig()
    assert config.result_ttl == 86400
    assert config.max_payload_bytes == 1024 * 1024 < config.max_message_bytes
    assert (config.host, config.port) == ("127.0.0.1", 7475)
