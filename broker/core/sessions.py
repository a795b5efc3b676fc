"""Worker sessions: one per connected stream, with credit, held leases and an outbox.

The core writes what a session must receive (assignments, cancels, rejections, drain) into its
outbox; the service flushes each outbox as one message per kind, at the end of the event-loop
turn (or at once, see broker.service.runtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.core.model import DEFAULT_QUEUE, Assignment, Cancel, Hello
from broker.core.timers import Timer
from broker.errors import BrokerError

if TYPE_CHECKING:
    from broker.core.leases import Lease


@dataclass(slots=True)
class Outbox:
    """Messages waiting to be written to one worker's stream."""

    assignments: list[Assignment] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)
    # Leases whose outcome the broker has taken (the service adds them once it is recorded).
    # They never make an outbox due by themselves (see __bool__): they ride with the next
    # assignments, or go when the service says acks are due.
    outcome_acks: list[str] = field(default_factory=list)
    drain: str | None = None
    # Set when the broker gives up on the session: the stream must end. A message for a lost
    # peer (missed pings: UNAVAILABLE, it may reconnect), an error for a refusal (fencing).
    drop: str | BrokerError | None = None

    def __bool__(self) -> bool:
        return bool(self.assignments or self.cancels or self.rejections or self.drain or self.drop)

    def cancel(self, lease_id: str, terminate: bool, reason: str) -> None:
        """Queue a lease's cancel, in the previous Cancel when terminate and reason match.

        A revoke of many running tasks then costs one message per session, not one per lease.
        """
        last = self.cancels[-1] if self.cancels else None
        if last is not None and last.terminate == terminate and last.reason == reason:
            last.lease_ids.append(lease_id)
        else:
            self.cancels.append(Cancel([lease_id], terminate, reason))


class Session:
    """A worker's stream as the core sees it."""

    def __init__(self, session_id: str, hello: Hello, connected_at: float, now: float) -> None:
        self.session_id = session_id
        self.hello = hello
        # Deduplicated: a queue listed twice would get the session two turns in its rotation.
        self.queues: tuple[str, ...] = tuple(dict.fromkeys(hello.queues)) or (DEFAULT_QUEUE,)
        self.credit = 0
        self.leases: dict[str, Lease] = {}
        self.connected_at = connected_at
        # The last message from the worker, or when it got work after an idle spell (idle
        # workers are not pinged: see WorkerSessions._check_liveness).
        self.last_seen = now
        self.draining = False
        # Closed: the stream ended; leases wait for the grace period, then are requeued.
        self.closed = False
        self.outbox = Outbox()
        self.grace_timer: Timer | None = None
        self.liveness_timer: Timer | None = None

    @property
    def worker_id(self) -> str:
        """The worker's self-chosen stable id."""
        return self.hello.worker_id

    @property
    def can_take_work(self) -> bool:
        """True when the broker may assign this session another task."""
        return self.credit > 0 and not self.draining and not self.closed

    def take_outbox(self) -> Outbox:
        """Return the pending messages and start a fresh outbox."""
        outbox, self.outbox = self.outbox, Outbox()
        return outbox
