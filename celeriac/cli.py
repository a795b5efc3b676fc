"""What every Celeriac command line shares: one-line errors, the logging flags, ``--version``.

Every usage mistake (an unknown flag, a value of the wrong type, a setting out of range) ends
the program with one line, ``error: ...``, on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from celeriac.logs import LOG_FORMATS

EXIT_USAGE = 2
# Where the parsed flags remember how an aliased flag was typed (``--loglevel`` or ``-l``).
SPELLED = "_spelled_flags"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: message`` and exit with status 2."""
        self.exit(EXIT_USAGE, f"error: {message}\n")


def program_name(package: str) -> str:
    """How this program was started, for usage lines and ``--version``.

    ``celeriac-worker`` (the console script) or ``python -m worker``.
    """
    invoked = Path(sys.argv[0]).name
    return invoked if invoked.startswith("celeriac-") else f"python -m {package}"


def usage_error(message: object) -> int:
    """Print a one-line ``error: ...`` to stderr and return the usage exit status (2)."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


class _StoreSpelled(argparse.Action):
    """Store the value and remember the option string typed, so an error can echo it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        spelled = dict(getattr(namespace, SPELLED, {}))
        spelled[self.dest] = option_string or self.dest
        setattr(namespace, SPELLED, spelled)


def add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    """``--log-level`` (also spelled ``--loglevel``, ``-l``), stored as ``log_level``."""
    parser.add_argument(
        "--log-level",
        "--loglevel",
        "-l",
        dest="log_level",
        action=_StoreSpelled,
        help=f"debug, info, warning, error or critical (default {default})",
    )


def add_log_flags(parser: argparse.ArgumentParser, default_level: str) -> None:
    """The level flag (:func:`add_log_level`), ``--logfile PATH`` and ``--log-format text|json``.

    Their values go into the program's configuration (fields ``logfile`` and ``log_format``),
    and from there into :func:`celeriac.logs.configure`, the one logging set-up.
    """
    add_log_level(parser, default_level)
    parser.add_argument("--logfile", "-f", help="append log lines to this file instead of stderr")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line, for log shippers",
    )


def add_version(parser: argparse.ArgumentParser) -> None:
    """``--version``: print the installed package's version and exit."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")


def version() -> str:
    """The installed celeriac distribution's version ("unknown" when run from a bare tree)."""
    try:
        return metadata.version("celeriac")
    except metadata.PackageNotFoundError:
        return "unknown"


def flag_values(
    args: argparse.Namespace, fields: Iterable[str], renames: dict[str, str] | None = None
) -> tuple[dict[str, object], dict[str, str]]:
    """The config values given as flags, and how each was spelled (``{"port": "--port"}``).

    Args:
        args: The parsed flags.
        fields: Config field names; a flag whose ``dest`` is a field name sets it.
        renames: Config field -> flag ``dest`` where they differ.
    """
    renames = renames or {}
    spelled: dict[str, str] = getattr(args, SPELLED, {})
    values: dict[str, object] = {}
    labels: dict[str, str] = {}
    for field in fields:
        dest = renames.get(field, field)
        value = getattr(args, dest, None)
        if value is not None:
            values[field] = value
            labels[field] = spelled.get(dest, "--" + dest.replace("_", "-"))
    return values, labels
