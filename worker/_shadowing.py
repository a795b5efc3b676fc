"""Refuse to start when a user's file hides the ``client`` package this worker is built on.

``python -m worker`` puts the current directory first on ``sys.path``, as Python always does for
``-m``, so a project with its own ``client.py`` (an HTTP client helper, say) beside its tasks
would have that file imported in place of Celeriac's client, and the worker would fail with an
unrelated ImportError. Checked before anything imports ``client``; ``find_spec`` imports nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# The packages the worker imports, installed beside it.
_NEEDED = ("client", "celeriac")
_EXIT_USAGE = 2


def refuse_shadowed_packages() -> None:
    """Exit with one line naming the file when a needed package resolves outside Celeriac."""
    home = Path(__file__).resolve().parent.parent
    for name in _NEEDED:
        if name in sys.modules:
            continue  # already imported, so whatever is on sys.path now cannot hide it
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec and spec.origin else None
        if origin is not None and home not in origin.parents:
            print(
                f"error: {origin} hides Celeriac's '{name}' package (Python puts the current "
                f"directory first on sys.path): rename that file, or start the worker from "
                f"another directory",
                file=sys.stderr,
            )
            raise SystemExit(_EXIT_USAGE)
