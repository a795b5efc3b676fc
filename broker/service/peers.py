"""Limits per peer address: open sessions and held GetResult calls.

A peer is the client's address without its port (``ipv4:10.0.0.7``), so a process that opens
connection after connection is still one peer, and so are all processes on one host. The
counters of a peer go when its last session or held call ends.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from broker.errors import HeldCallsExceeded, SessionsExceeded


def peer_address(peer: str) -> str:
    """``peer`` as gRPC reports it (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``), port dropped."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer  # unix sockets and anything else: the whole string


class PeerLimits:
    """Counts, per peer address, what the broker holds for it.

    Args:
        max_sessions: Open sessions (client Session streams and worker sessions) per peer.
        max_held_calls: GetResult calls held waiting per peer, over all its calls and streams.
    """

    def __init__(self, max_sessions: int, max_held_calls: int) -> None:
        self._max_sessions = max_sessions
        self._max_held_calls = max_held_calls
        self._sessions: Counter[str] = Counter()
        self._held_calls: Counter[str] = Counter()

    @contextlib.contextmanager
    def session(self, peer: str) -> Iterator[None]:
        """Hold one session slot of ``peer`` for the block.

        Raises:
            SessionsExceeded: ``peer`` already has ``max_sessions`` open.
        """
        address = peer_address(peer)
        if self._sessions[address] >= self._max_sessions:
            raise SessionsExceeded(
                f"too many sessions from {address}: {self._sessions[address]} are open "
                f"(max_sessions_per_peer={self._max_sessions})",
                limit="max_sessions_per_peer",
                max=self._max_sessions,
                value=self._sessions[address] + 1,
            )
        with _counted(self._sessions, address):
            yield

    @contextlib.contextmanager
    def hold_call(self, peer: str) -> Iterator[None]:
        """Hold one held-call slot of ``peer`` for the block (see take_call)."""
        address = self.take_call(peer)
        try:
            yield
        finally:
            self.release_call(address)

    def take_call(self, peer: str) -> str:
        """Take one held-call slot of ``peer`` while a GetResult waits; returns its address.

        Raises:
            HeldCallsExceeded: ``peer`` already has ``max_held_calls`` calls waiting.
        """
        address = peer_address(peer)
        held = self._held_calls[address]
        if held >= self._max_held_calls:
            raise HeldCallsExceeded(
                f"too many held GetResult calls from {address}: {held} are waiting "
                f"(max_held_calls_per_peer={self._max_held_calls})",
                limit="max_held_calls_per_peer",
                max=self._max_held_calls,
                value=held + 1,
            )
        self._held_calls[address] = held + 1
        return address

    def release_call(self, address: str) -> None:
        """Give back a slot taken with take_call."""
        _decrement(self._held_calls, address)

    def sessions_of(self, peer: str) -> int:
        """Open sessions of ``peer`` (for tests and metrics)."""
        return self._sessions[peer_address(peer)]

    def held_calls_of(self, peer: str) -> int:
        """Held calls of ``peer`` (for tests and metrics)."""
        return self._held_calls[peer_address(peer)]


@contextlib.contextmanager
def _counted(counter: Counter[str], key: str) -> Iterator[None]:
    counter[key] += 1
    try:
        yield
    finally:
        _decrement(counter, key)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]  # an idle peer costs nothing
