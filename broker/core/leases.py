"""Leases: the fence around every assignment.

A lease id is minted per assignment and carries the attempt number. Anything a worker reports
names its lease; a lease the broker no longer holds is stale and the report is dropped.
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING

from broker.core.model import TaskRecord
from broker.core.timers import Timer

if TYPE_CHECKING:
    from broker.core.gates import Gates
    from broker.core.sessions import Session


class Lease:
    """One attempt of one task held by one worker session."""

    __slots__ = ("attempt", "deadline", "lease_id", "record", "session")

    def __init__(self, lease_id: str, record: TaskRecord, attempt: int, session: Session) -> None:
        self.lease_id = lease_id
        self.record = record
        self.attempt = attempt
        self.session = session
        # Only tasks with a hard time limit have a lease deadline; others live as long as
        # their session does.
        self.deadline: Timer | None = None


class LeaseTable:
    """Every lease the broker holds, by id."""

    def __init__(self, gates: Gates) -> None:
        # Told of every lease of a concurrency-limited task that begins or ends.
        self._gates = gates
        # A per-process prefix: a worker reconnecting to a restarted broker can never have
        # its old lease ids mistaken for new ones.
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)
        self._leases: dict[str, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def mint(self, record: TaskRecord, session: Session) -> Lease:
        """Create a lease for the next attempt of ``record`` on ``session``."""
        lease_id = f"{self._prefix}-{next(self._counter)}"
        lease = Lease(lease_id, record, record.attempts, session)
        self._leases[lease_id] = lease
        session.leases[lease_id] = lease
        record.lease_id = lease_id
        if record.spec.concurrency_limit:
            self._gates.leased(record)
        return lease

    def adopt(self, record: TaskRecord, session: Session, lease_id: str) -> Lease:
        """Hold ``record`` under a lease id minted by an earlier broker process (recovery)."""
        lease = Lease(lease_id, record, record.attempts, session)
        self._leases[lease_id] = lease
        session.leases[lease_id] = lease
        record.lease_id = lease_id
        if record.spec.concurrency_limit:
            self._gates.leased(record)
        return lease

    def get(self, lease_id: str) -> Lease | None:
        """The live lease with this id, or None when it is stale or unknown."""
        return self._leases.get(lease_id)

    def release(self, lease: Lease) -> None:
        """Stop holding ``lease``: later reports naming it are rejected."""
        released = self._leases.pop(lease.lease_id, None) is not None
        if released and lease.record.spec.concurrency_limit:
            self._gates.released(lease.record)
        lease.session.leases.pop(lease.lease_id, None)
        if lease.record.lease_id == lease.lease_id:
            lease.record.lease_id = ""
        if lease.deadline is not None:
            lease.deadline.cancel()
            lease.deadline = None

    def move(self, lease: Lease, session: Session) -> None:
        """Hand ``lease`` to another session (a reconnecting worker reclaiming it)."""
        lease.session.leases.pop(lease.lease_id, None)
        lease.session = session
        session.leases[lease.lease_id] = lease
