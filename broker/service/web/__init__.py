"""The broker's HTTP port (``--http-port``, off by default): /metrics and the dashboard.

``/`` is the dashboard (queues, workers, task lookup, dead letters, live events, throughput
and latency plots), a static page and script that read the JSON API under ``/api/``;
``/metrics`` is Prometheus's text format (:mod:`broker.service.metrics`). Who may read and
change what is in :mod:`broker.service.web._auth`.
"""

from __future__ import annotations

import asyncio
import ssl

from broker.config import BrokerConfig
from broker.service.metrics import metrics_registry
from broker.service.runtime import Runtime
from broker.service.web._app import WebApp
from broker.service.web._auth import HttpAuth
from broker.service.web._server import HttpListener, tls_context
from broker.service.web._stats import TaskStats
from broker.service.web._stream import MAX_STREAMS, EventStreams
from broker.tokens import TokenTable

__all__ = ["WebServer"]


class WebServer:
    """The HTTP port of one broker."""

    def __init__(self, listener: HttpListener, streams: EventStreams, scheme: str) -> None:
        self._listener = listener
        self._streams = streams
        self.scheme = scheme

    @property
    def port(self) -> int:
        """The port bound."""
        return self._listener.port

    @classmethod
    def start(cls, runtime: Runtime, config: BrokerConfig, tokens: TokenTable) -> WebServer:
        """Serve ``runtime``'s metrics and dashboard on ``config.http_host:http_port``.

        Call on the broker's loop. HTTPS when the broker has a TLS certificate.

        Raises:
            OSError: The address cannot be bound.
            ssl.SSLError: The certificate or key cannot be used.
        """
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if config.tls_cert and config.tls_key:
            tls = tls_context(config.tls_cert, config.tls_key)
        stats = TaskStats()
        runtime.events.add_listener(stats.on_event)
        streams = EventStreams(runtime.events, loop, config.events_buffer, MAX_STREAMS)
        app = WebApp(
            runtime,
            loop=loop,
            auth=HttpAuth(tokens),
            registry=metrics_registry(runtime),
            stats=stats,
            streams=streams,
            secure=tls is not None,
        )
        host = config.http_host.removeprefix("[").removesuffix("]")
        listener = HttpListener.start(app, host, config.http_port, tls)
        return cls(listener, streams, "https" if tls else "http")

    def stop(self) -> None:
        """Stop serving; open event streams end at their next event or keep-alive."""
        self._streams.close()
        self._listener.stop()
