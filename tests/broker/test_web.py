"""The HTTP port's parts without a server: its settings, access rules, stats and payload views."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.core.events import EventKind, TaskEvent
from broker.core.model import Payload
from broker.errors import LimitExceeded, PermissionDenied, Unauthenticated
from broker.service.auth import HTTP_CHANGE, HTTP_READ
from broker.service.events import BrokerEvent, EventHub
from broker.service.loop_calls import call_on_loop
from broker.service.security import load_security
from broker.service.web._auth import HttpAuth, check_change
from broker.service.web._stats import RATE_WINDOW, SAMPLES_PER_SECOND, TaskStats
from broker.service.web._stream import EventStreams
from broker.service.web._views import payload_view
from broker.tokens import load_tokens

MONITOR = "monitor-token-0123456789"
ADMIN = "admin-token-0123456789ab"


def test_the_http_port_keeps_its_older_metrics_names() -> None:
    assert BrokerConfig.from_env({"CELERIAC_BROKER_METRICS_PORT": "9808"}).http_port == 9808
    assert BrokerConfig.from_env({"CELERIAC_BROKER_METRICS_HOST": "::1"}).http_host == "::1"
    both = {"CELERIAC_BROKER_METRICS_PORT": "9808", "CELERIAC_BROKER_HTTP_PORT": "9909"}
    assert BrokerConfig.from_env(both).http_port == 9909
    assert BrokerConfig().http_port == -1


def test_the_http_port_beyond_loopback_needs_tokens() -> None:
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 with no tokens"):
        load_security(BrokerConfig(http_port=0, http_host="0.0.0.0"))
    load_security(BrokerConfig(http_port=-1, http_host="0.0.0.0"))  # off: nothing listens
    load_security(BrokerConfig(http_port=0, http_host="0.0.0.0", insecure=True))


def auth() -> HttpAuth:
    return HttpAuth(load_tokens("", f"monitor:prom:{MONITOR} admin:ops:{ADMIN}"))


def test_bearer_tokens_and_sessions_carry_roles() -> None:
    gate = auth()
    with pytest.raises(Unauthenticated):
        gate.caller({}, HTTP_READ, "/metrics")
    with pytest.raises(Unauthenticated):
        gate.caller({"HTTP_AUTHORIZATION": "Bearer not-a-known-token"}, HTTP_READ, "/metrics")
    monitor = {"HTTP_AUTHORIZATION": f"Bearer {MONITOR}"}
    assert gate.caller(monitor, HTTP_READ, "/metrics").name == "prom"
    with pytest.raises(PermissionDenied, match="'prom' has role monitor; requeue needs admin"):
        gate.caller(monitor, HTTP_CHANGE, "requeue")
    login = gate.login(ADMIN, HTTP_READ)
    cookie = {"HTTP_COOKIE": f"other=1; celeriac_session={login.session_id}"}
    assert gate.caller(cookie, HTTP_CHANGE, "requeue").name == "ops"
    gate.logout(cookie)
    with pytest.raises(Unauthenticated, match="log in again"):
        gate.caller(cookie, HTTP_READ, "/api/overview")


def test_sessions_expire() -> None:
    now = [0.0]
    gate = HttpAuth(load_tokens("", f"monitor:prom:{MONITOR}"), clock=lambda: now[0])
    cookie = {"HTTP_COOKIE": f"celeriac_session={gate.login(MONITOR, HTTP_READ).session_id}"}
    assert gate.caller(cookie, HTTP_READ, "x").name == "prom"
    now[0] = 13 * 3600.0
    with pytest.raises(Unauthenticated):
        gate.caller(cookie, HTTP_READ, "x")


def test_without_tokens_only_ip_addresses_and_localhost_are_answered() -> None:
    gate = HttpAuth(load_tokens("", ""))
    for host in ("127.0.0.1:9808", "localhost:9808", "[::1]:9808", "10.0.0.5"):
        assert gate.caller({"HTTP_HOST": host}, HTTP_CHANGE, "requeue").name == "anonymous"
    with pytest.raises(PermissionDenied, match=r"'rebind\.example'"):
        gate.caller({"HTTP_HOST": "rebind.example:9808"}, HTTP_READ, "/api/overview")


def test_changes_need_the_header_and_this_origin() -> None:
    host = {"HTTP_HOST": "127.0.0.1:9808", "HTTP_X_CELERIAC_DASHBOARD": "1"}
    check_change(host)
    check_change({**host, "HTTP_ORIGIN": "http://127.0.0.1:9808"})
    with pytest.raises(PermissionDenied, match="another site"):
        check_change({**host, "HTTP_ORIGIN": "https://evil.example"})
    with pytest.raises(PermissionDenied, match="X-Celeriac-Dashboard"):
        check_change({"HTTP_HOST": "127.0.0.1:9808"})


def event(kind: str, at: float, queue: str = "q", runtime: float = 0.0) -> BrokerEvent:
    return BrokerEvent(kind, at, "id", "tasks.add", queue, runtime=runtime)


def test_stats_count_seconds_rates_and_percentiles() -> None:
    stats = TaskStats()
    for index in range(10):
        stats.on_event(event("accepted", 1000.2))
        stats.on_event(event("succeeded", 1001.5, runtime=(index + 1) / 1000))
    stats.on_event(event("failed", 1001.9, queue="other"))
    points = stats.series(1002.0)
    assert points[-1]["at"] == 1002 and points[-1]["succeeded"] == 0
    assert points[-3] == {"at": 1000, "accepted": 10, "succeeded": 0, "failed": 0}
    assert points[-2]["succeeded"] == 10 and points[-2]["failed"] == 1
    assert points[-2]["p50"] == 0.006 and points[-2]["p95"] == 0.010
    assert stats.queue_rates(1002.0) == {
        "q": (10 / RATE_WINDOW, 10 / RATE_WINDOW),
        "other": (0.0, 1 / RATE_WINDOW),
    }
    assert stats.queue_rates(1002.0 + RATE_WINDOW) == {}


def test_stats_keep_a_bounded_sample_of_runtimes() -> None:
    stats = TaskStats()
    for index in range(SAMPLES_PER_SECOND * 4):
        stats.on_event(event("succeeded", 50.5, runtime=1 + index))
    point = stats.series(50.0)[-1]
    assert point["succeeded"] == SAMPLES_PER_SECOND * 4
    assert 1 <= point["p50"] <= SAMPLES_PER_SECOND * 4


def test_payloads_are_decoded_when_json_and_described_otherwise() -> None:
    arguments = Payload("application/json", b'[[1, "a"], {"k": true}]')
    assert payload_view(arguments, arguments=True) == {
        "content_type": "application/json",
        "size": 23,
        "args": [1, "a"],
        "kwargs": {"k": True},
    }
    assert payload_view(Payload("application/json", b"8"))["value"] == 8  # type: ignore[index]
    pickled = payload_view(Payload("application/x-python-pickle", b"\x80\x05K\x08."))
    assert pickled == {
        "content_type": "application/x-python-pickle",
        "size": 5,
        "preview": "80 05 4b 08 2e",
    }
    broken = payload_view(Payload("application/json", b"{"))
    assert broken is not None and broken["note"] == "not valid JSON"
    assert payload_view(None) is None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, as the broker's runs beside HTTP threads."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(5)
    running.close()


def test_a_slow_page_loses_events_counted_and_never_holds_the_broker(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = EventHub(Broker(BrokerConfig()), heartbeat_interval=60.0)
    streams = EventStreams(hub, loop, buffer=2, max_streams=1)
    body = streams.open()
    assert next(body).startswith(b"retry:")  # subscribed before the first byte was sent

    def publish() -> None:  # ten events while the page reads nothing: the hub never waits
        for number in range(10):
            hub.on_task_event(TaskEvent(EventKind.ACCEPTED, f"task-{number}", 1.0, ""))

    call_on_loop(loop, publish)
    first = json.loads(next(body).decode().removeprefix("data: "))
    second = json.loads(next(body).decode().removeprefix("data: "))
    assert (first["task_id"], first["dropped"]) == ("task-0", 8)
    assert (second["task_id"], second["dropped"]) == ("task-1", 0)
    with pytest.raises(LimitExceeded, match="1 event streams are open"):
        streams.open()
    body.close()  # the page went away: it unsubscribes and frees its place
    assert call_on_loop(loop, lambda: hub.active) is False
    streams.open().close()  # closed before its first byte: its place is freed all the same
    streams.open().close()
    assert call_on_loop(loop, lambda: hub.active) is False
