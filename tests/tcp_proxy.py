"""A TCP relay a test puts between a worker or client and the broker, to break the network.

`cut()` closes every relayed connection (both ends see the connection drop), `blackhole()`
keeps them open but silently drops what they carry (a partition: a peer's writes vanish), and
`point_to()` chooses where new connections go (None: they are closed at once, as if nothing
listened). The broker and the peer stay real processes on real sockets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

_CHUNK = 1 << 16


class TcpProxy:
    """Relays 127.0.0.1:`port` to a target ``host:port``; `.address` is where to connect."""

    def __init__(self, target: str | None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._changed = threading.Condition()
        self._target = target
        self._open: list[socket.socket] = []
        self._blackholed = False
        self.dropped_from_peer = 0  # bytes the peer sent into the blackhole
        self.relayed = 0  # connections relayed to a target so far
        threading.Thread(target=self._accept, daemon=True).start()

    def point_to(self, target: str | None) -> None:
        """Send new connections to ``target`` (None: close them at once)."""
        with self._changed:
            self._target = target

    def blackhole(self) -> None:
        """Keep open connections open, but drop everything they carry from now on."""
        with self._changed:
            self._blackholed = True

    def wait_dropped(self, timeout: float = 20.0) -> None:
        """Block until the peer has sent something into the blackhole."""
        self._wait_for(lambda: self.dropped_from_peer > 0, "no bytes into the blackhole", timeout)

    def wait_relayed(self, count: int, timeout: float = 20.0) -> None:
        """Block until ``count`` connections in all have been relayed to a target."""
        self._wait_for(lambda: self.relayed >= count, f"fewer than {count} connections", timeout)

    def _wait_for(self, condition: Callable[[], bool], failure: str, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, timeout):
                raise AssertionError(f"{failure} within {timeout}s")

    def cut(self) -> None:
        """Close every relayed connection (new ones are relayed normally again)."""
        with self._changed:
            sockets, self._open = self._open, []
            self._blackholed = False
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        """Stop listening and cut everything."""
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._changed:
                target = self._target
            upstream = _connect(target)
            if upstream is None:
                peer.close()
                continue
            with self._changed:
                self._open += [peer, upstream]
                self.relayed += 1
                self._changed.notify_all()
            threading.Thread(target=self._pump, args=(peer, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, peer, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_peer: bool) -> None:
        try:
            while data := source.recv(_CHUNK):
                with self._changed:
                    if self._blackholed:
                        if from_peer:
                            self.dropped_from_peer += len(data)
                            self._changed.notify_all()
                        continue
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):  # one side ended: end the other, as a real network would
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _connect(target: str | None) -> socket.socket | None:
    if target is None:
        return None
    host, port = target.rsplit(":", 1)
    try:
        upstream = socket.create_connection((host, int(port)), timeout=5)
    except OSError:
        return None
    upstream.settimeout(None)  # the timeout was for connecting; relaying waits as long as it takes
    return upstream
