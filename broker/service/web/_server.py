"""The HTTP listener: a small threaded WSGI server from the standard library.

Requests are served in threads of their own, never on the broker's loop: a slow or stalled
browser holds its thread only. With the broker's TLS certificate (``--tls-cert``) the port
serves HTTPS, the handshake done in the request's thread. Request lines are logged at DEBUG
only, and never a header (tokens travel in headers and cookies).
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

logger = logging.getLogger(__name__)

# How long stop() waits for the serving thread.
STOP_TIMEOUT = 5.0


# Connections served at once (each holds a thread); past it, new ones are closed at once.
MAX_CONNECTIONS = 64
# Seconds a connection may stay silent while sending its request, or stalled while we write
# to it (a live events stream then ends), before it is closed and its thread freed.
SOCKET_TIMEOUT = 30.0
REFUSED_LOG_INTERVAL = 10.0


class _Handler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s %s", self.address_string(), format % args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._quiet_until = 0.0

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve ``request`` in a thread of its own, or close it when too many are open."""
        if not self._connections.acquire(blocking=False):
            now = time.monotonic()
            if now >= self._quiet_until:  # one line per interval, however many are refused
                self._quiet_until = now + REFUSED_LOG_INTERVAL
                logger.warning("http: %d connections open already; refusing more", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (TLS handshake, timeout, reset): one DEBUG line, no trace."""
        error = sys.exc_info()[1]
        logger.debug("http: connection from %s failed: %r", client_address, error)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve ``request`` (in its thread), then free its place."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


class HttpListener:
    """One bound HTTP(S) port serving a WSGI application from a thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The port bound."""
        return int(self._server.server_port)

    @classmethod
    def start(
        cls, app: Any, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> HttpListener:
        """Bind ``host:port`` (host without brackets) and serve ``app`` from a thread.

        Raises:
            OSError: The address cannot be bound.
        """
        family = _family(host, port)
        server_class = type("HttpServer", (_ThreadingServer,), {"address_family": family})
        server: WSGIServer = server_class((host, port), _Handler)
        server.set_app(app)
        if tls is not None:
            server.socket = tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        thread = threading.Thread(target=server.serve_forever, name="celeriac-http", daemon=True)
        thread.start()
        return cls(server, thread)

    def stop(self) -> None:
        """Stop accepting; the serving thread ends (open event streams end on their own)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT)


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context for the broker's certificate and key files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _family(host: str, port: int) -> socket.AddressFamily:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]
