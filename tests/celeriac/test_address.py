"""The one broker-address parser, and the three programs that must give the same answers."""

from __future__ import annotations

import re

import pytest

from celeriac.address import Address, AddressError, parse_address
from client import ClientConfig
from client.errors import ConfigurationError as ClientConfigurationError
from worker.config import WorkerConfig, grpc_target
from worker.errors import ConfigurationError as WorkerConfigurationError

ACCEPTED = [
    ("localhost:7475", Address("localhost", 7475), "localhost:7475"),
    ("grpc://10.0.0.1:9000", Address("10.0.0.1", 9000), "10.0.0.1:9000"),
    ("grpc://broker.internal:80/", Address("broker.internal", 80), "broker.internal:80"),
    ("GRPC://h:1", Address("h", 1), "h:1"),
    ("grpcs://broker.example:443", Address("broker.example", 443, tls=True), "broker.example:443"),
    ("broker", Address("broker", 7475), "broker:7475"),
    ("grpcs://broker", Address("broker", 7475, tls=True), "broker:7475"),
    ("[::1]:7000", Address("::1", 7000), "[::1]:7000"),
    ("grpc://[fe80::1]", Address("fe80::1", 7475), "[fe80::1]:7475"),
    ("  my_container:65535  ", Address("my_container", 65535), "my_container:65535"),
    # Several brokers sharing a database: gRPC's list form, names resolved to IPs.
    (
        "10.0.0.1:7001, grpc://10.0.0.2:7002",
        Address("10.0.0.1", 7001, others=(("10.0.0.2", 7002),)),
        "ipv4:10.0.0.1:7001,10.0.0.2:7002",
    ),
    (
        "localhost:1,127.0.0.2",
        Address("localhost", 1, others=(("127.0.0.2", 7475),)),
        "ipv4:127.0.0.1:1,127.0.0.2:7475",
    ),
    (
        "[::1]:1,10.0.0.1:2",
        Address("::1", 1, others=(("10.0.0.1", 2),)),
        "ipv6:[::1]:1,[::ffff:10.0.0.1]:2",
    ),
]

REFUSED = [
    ("", "is empty"),
    ("   ", "is empty"),
    ("http://h:1", "unknown scheme http://"),
    ("h:port", "'port', which is not a number"),
    ("h:99999", "port 99999, out of range (1-65535)"),
    ("h:0", "port 0, out of range (1-65535)"),
    ("h:", "'', which is not a number"),
    ("a:1:2", "'1:2', which is not a number"),
    ("::1", "IPv6 host outside brackets"),
    ("[not-ipv6]:1", "is not an IPv6 address in brackets"),
    ("bad host:1", "is not a host name or IP address"),
    ("-h:1", "is not a host name or IP address"),
    ("h:1/path", "is not an address"),
    ("grpc://a:1,grpcs://b:2", "mixes plain (grpc://) and TLS (grpcs://) brokers"),
    ("a:1,", "is empty"),
]


@pytest.mark.parametrize(("text", "address", "target"), ACCEPTED)
def test_accepted_forms(text: str, address: Address, target: str) -> None:
    parsed = parse_address(text)
    assert parsed == address
    assert parsed.target == target


def test_the_string_form_keeps_tls() -> None:
    assert str(parse_address("grpcs://[::1]:1")) == "grpcs://[::1]:1"
    assert str(parse_address("grpc://h")) == "h:7475"
    assert str(parse_address("grpcs://a:1,grpcs://[::1]")) == "grpcs://a:1,[::1]:7475"


@pytest.mark.parametrize(("text", "problem"), REFUSED)
def test_refused_forms_name_the_value_and_the_accepted_forms(text: str, problem: str) -> None:
    with pytest.raises(AddressError) as raised:
        parse_address(text)
    message = str(raised.value)
    assert problem in message
    assert repr(text) in message
    assert "accepted forms: host:port, grpc://host:port, grpcs://host:port" in message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "address", "target"), ACCEPTED)
def test_client_worker_and_admin_accept_the_same_forms(
    text: str, address: Address, target: str
) -> None:
    assert ClientConfig(broker=text).target == target
    assert ClientConfig(broker=text).address.tls == address.tls
    assert WorkerConfig(broker=text).broker == text
    assert grpc_target(text) == target


@pytest.mark.parametrize(("text", "problem"), [case for case in REFUSED if case[0].strip()])
def test_client_worker_and_admin_refuse_the_same_forms(text: str, problem: str) -> None:
    with pytest.raises(ClientConfigurationError, match=re.escape(problem)):
        ClientConfig(broker=text)
    with pytest.raises(WorkerConfigurationError, match=re.escape(problem)):
        WorkerConfig(broker=text)
    with pytest.raises(WorkerConfigurationError, match="accepted forms"):
        grpc_target(text)
