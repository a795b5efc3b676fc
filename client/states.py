"""Task state names as a client sees them; the names are Celery's (``celery.states``).

A task's custom state set with ``self.update_state(state="PROGRESS")`` is reported under its own
name while the task runs.
"""

from __future__ import annotations

PENDING = "PENDING"
"""Accepted and waiting: in a queue for a worker, or scheduled for later."""
STARTED = "STARTED"
"""A worker has begun executing the task."""
RETRY = "RETRY"
"""The last attempt failed; the next one waits at the broker."""
SUCCESS = "SUCCESS"
"""Finished; the result holds the return value."""
FAILURE = "FAILURE"
"""Finished with an error (raised, retries exhausted, time limit, expired, unknown task)."""
REVOKED = "REVOKED"
"""Revoked before or while it ran; it will not run (again)."""
UNKNOWN = "UNKNOWN"
"""The broker has no record of the id: never submitted, forgotten, or expired.

Celery reports such ids as PENDING; Celeriac does not, so a typo is not mistaken for a queue.
"""

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
"""States after which nothing changes any more."""
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
"""States whose result is an exception."""
