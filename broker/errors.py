"""The broker's error tree.

Plain Python so the core can raise these without knowing about gRPC; the service layer maps
each class to a status code in one table (:mod:`broker.service.status`).
"""

from __future__ import annotations

from typing import ClassVar


class BrokerError(Exception):
    """Base class of every error the broker reports to a peer.

    ``reason`` is the stable, typed name of the refusal (google.rpc.ErrorInfo's reason, in
    UPPER_SNAKE_CASE) that a program matches instead of the message text. Every subclass names
    its own; a refusal that needs finer detail raises a subclass with a narrower reason.
    """

    reason: ClassVar[str] = "BROKER_ERROR"


class InvalidArgument(BrokerError):
    """A request is malformed: empty name, priority out of range, unknown content type, ..."""

    reason = "INVALID_ARGUMENT"


class NotFound(BrokerError):
    """The request names a task (or queue) the broker does not hold."""

    reason = "NOT_FOUND"


class QueueFull(BrokerError):
    """The broker holds as many unfinished tasks as it is configured to accept."""

    reason = "QUEUE_FULL"


class PayloadTooLarge(BrokerError):
    """A payload (or the headers of a task) is larger than the configured limit."""

    reason = "PAYLOAD_TOO_LARGE"


class StaleLease(BrokerError):
    """A report names a lease the broker no longer holds."""

    reason = "STALE_LEASE"


class ProtocolViolation(BrokerError):
    """A worker broke the session protocol (e.g. a Report before its Hello)."""

    reason = "PROTOCOL_VIOLATION"


class ShuttingDown(BrokerError):
    """The broker is stopping and accepts no new work."""

    reason = "SHUTTING_DOWN"
