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

    def __init__(self, message: str, **metadata: object) -> None:
        super().__init__(message)
        # Facts a program can read without parsing the message (the limit, the current value),
        # sent as the ErrorInfo's metadata; google.rpc.ErrorInfo holds strings only.
        self.metadata: dict[str, str] = {key: str(value) for key, value in metadata.items()}

    def prefixed(self, prefix: str) -> BrokerError:
        """The same refusal with ``prefix`` in front of its message (e.g. a batch index)."""
        return type(self)(f"{prefix}{self}", **self.metadata)


class InvalidArgument(BrokerError):
    """A request is malformed: empty name, priority out of range, unknown content type, ..."""

    reason = "INVALID_ARGUMENT"


class NotFound(BrokerError):
    """The request names a task (or queue) the broker does not hold."""

    reason = "NOT_FOUND"


class InvalidName(InvalidArgument):
    """A task or queue name is too long or holds characters a log or terminal could misread."""

    reason = "INVALID_NAME"


class MalformedMessage(InvalidArgument):
    """The request's bytes do not decode as the message the method expects."""

    reason = "MALFORMED_MESSAGE"


class LimitExceeded(BrokerError):
    """A configured resource limit refuses the request; the message names the limit."""

    reason = "LIMIT_EXCEEDED"


class QueueFull(LimitExceeded):
    """The broker holds as many unfinished tasks as it is configured to accept."""

    reason = "QUEUE_FULL"


class PayloadTooLarge(LimitExceeded):
    """A payload (or the headers of a task) is larger than the configured limit."""

    reason = "PAYLOAD_TOO_LARGE"


class MessageTooLarge(LimitExceeded):
    """An answer would be larger than gRPC's message limit (ask for less at a time)."""

    reason = "MESSAGE_TOO_LARGE"


class HeldBytesExceeded(LimitExceeded):
    """Queued payloads and stored results together reached the broker's high-water mark."""

    reason = "HELD_BYTES_EXCEEDED"


class HeldCallsExceeded(LimitExceeded):
    """A stream or peer holds as many waiting GetResult calls (or their bytes) as allowed."""

    reason = "HELD_CALLS_EXCEEDED"


class QueuesExceeded(LimitExceeded):
    """The broker knows as many queues as it is configured to hold."""

    reason = "QUEUES_EXCEEDED"


class SessionsExceeded(LimitExceeded):
    """A peer address has as many open sessions (client or worker) as allowed."""

    reason = "SESSIONS_EXCEEDED"


class WorkflowTooLarge(LimitExceeded):
    """A task depends on more tasks than max_dependencies allows (a huge chord)."""

    reason = "WORKFLOW_TOO_LARGE"


class WorkflowTooDeep(LimitExceeded):
    """A task would sit deeper in a chain of dependencies than max_workflow_depth allows."""

    reason = "WORKFLOW_TOO_DEEP"


class UnknownDependency(InvalidArgument):
    """A task depends on a task id the broker does not hold (nor earlier in the batch)."""

    reason = "UNKNOWN_DEPENDENCY"


class DependencyCycle(InvalidArgument):
    """A task depends on itself, directly or through other tasks of its batch."""

    reason = "DEPENDENCY_CYCLE"


class StaleLease(BrokerError):
    """A report names a lease the broker no longer holds."""

    reason = "STALE_LEASE"


class ProtocolViolation(BrokerError):
    """A worker broke the session protocol (e.g. a Report before its Hello)."""

    reason = "PROTOCOL_VIOLATION"


class JournalUnavailable(BrokerError):
    """The journal cannot be written (disk full, I/O error): the broker takes no new work."""

    reason = "JOURNAL_UNAVAILABLE"


class ShuttingDown(BrokerError):
    """The broker is stopping and accepts no new work."""

    reason = "SHUTTING_DOWN"


class Unauthenticated(BrokerError):
    """A call carries no bearer token, or one the broker does not know."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(BrokerError):
    """A call's token is valid, but its role may not call this method."""

    reason = "PERMISSION_DENIED"


class ContentTypeNotAccepted(InvalidArgument):
    """Task arguments are in a content type the operator did not accept (--accept-content)."""

    reason = "CONTENT_TYPE_NOT_ACCEPTED"


class SessionFenced(BrokerError):
    """A newer session opened with this session's worker id; this one is over.

    A failed precondition, not an outage: a second process sharing a worker id stops instead
    of fencing the first one back.
    """

    reason = "SESSION_FENCED"
