"""The broker's error tree.

Plain Python so the core can raise these without knowing about gRPC; the service layer maps
each class to a status code in one table (:mod:`broker.service.status`).
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every error the broker reports to a peer."""


class InvalidArgument(BrokerError):
    """A request is malformed: empty name, priority out of range, unknown content type, ..."""


class NotFound(BrokerError):
    """The request names a task (or queue) the broker does not hold."""


class QueueFull(BrokerError):
    """The broker holds as many unfinished tasks as it is configured to accept."""


class PayloadTooLarge(BrokerError):
    """A payload (or the headers of a task) is larger than the configured limit."""


class StaleLease(BrokerError):
    """A report names a lease the broker no longer holds."""


class ProtocolViolation(BrokerError):
    """A worker broke the session protocol (e.g. a Report before its Hello)."""


class ShuttingDown(BrokerError):
    """The broker is stopping and accepts no new work."""
