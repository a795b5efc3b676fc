"""The ``--store`` setting: empty for the embedded SQLite journal, or a PostgreSQL URL.

A URL may carry a password (``postgresql://user:secret@host/db``); it must never reach a log
line or an error message, so everything that shows a store shows :func:`redacted` instead.
libpq's own variables (``PGPASSWORD``, ``~/.pgpass``) keep the password out of the URL
altogether and are honoured as usual.
"""

from __future__ import annotations

from celeriac.settings import redacted_url

SCHEMES = ("postgresql://", "postgres://")


def is_postgres(store: str) -> bool:
    """Whether ``store`` names a PostgreSQL database (rather than the embedded journal)."""
    return store.lower().startswith(SCHEMES)


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    return redacted_url(url)


def store_problem(value: str, _config: object) -> str | None:
    """The setting's check: empty, or a ``postgresql://`` URL."""
    if value and not is_postgres(value):
        return (
            "is not a PostgreSQL URL (postgresql://user@host:port/database); leave it empty "
            "for the embedded journal"
        )
    return None
