"""Import the `--tasks` modules and collect the tasks their apps declare.

Like Celery, the current directory is put on `sys.path` first, so `--tasks proj.tasks` works
from a project's root without installing it. Every `client.Celeriac` instance found at the top
level of a module contributes its `tasks`; the registry is their union. A module with no app of
its own (shared tasks, or a Django-style `proj.celery` whose app autodiscovers them) uses the
apps its import created.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from celeriac.v1 import tasks_pb2
from client import codec, periodic, shared
from client.app import Celeriac
from client.errors import InvalidTaskSpec
from client.task import Task
from worker.errors import TaskModuleError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registry:
    """The tasks a worker can run, and the apps that declared them."""

    tasks: dict[str, Task]
    apps: tuple[Celeriac, ...]
    # The periodic tasks the apps declare, as sent in the session hello.
    periodic: tuple[tasks_pb2.PeriodicTask, ...] = ()

    def broker_address(self) -> str | None:
        """The broker address of the first app that names one, if any."""
        for app in self.apps:
            address = getattr(app.conf, "broker", None)
            if address:
                return str(address)
        return None


def load(modules: Sequence[str]) -> Registry:
    """Import each module and collect the tasks of every Celeriac app defined in it.

    Args:
        modules: Dotted module names, e.g. ["proj.tasks"].

    Returns:
        The registry.

    Raises:
        TaskModuleError: A module cannot be imported, or no module declares an app.
    """
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    tasks: dict[str, Task] = {}
    apps: list[Celeriac] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the user's module can raise anything while importing
            raise TaskModuleError(f"cannot import task module {name!r}: {exc!r}") from exc
        found = [value for value in vars(module).values() if isinstance(value, Celeriac)]
        if not found:
            # A module of shared tasks (@shared_task) that imports the project's app through
            # another module: every app the import created holds its tasks.
            found = shared.live_apps()
        if not found:
            raise TaskModuleError(
                f"task module {name!r} defines no Celeriac app, and importing it created none "
                "(a module of @shared_task tasks must import the module that creates the app)"
            )
        for app in found:
            if not any(app is known for known in apps):
                apps.append(app)
                tasks.update(app.tasks)
    logger.debug("loaded %d tasks from %s", len(tasks), ", ".join(modules))
    return Registry(tasks=tasks, apps=tuple(apps), periodic=periodic_tasks(apps))


def periodic_tasks(apps: Sequence[Celeriac]) -> tuple[tasks_pb2.PeriodicTask, ...]:
    """The periodic tasks ``apps`` declare (after their ``on_after_configure`` receivers ran).

    Raises:
        TaskModuleError: An entry is malformed (the message names it).
    """
    declared: dict[str, tasks_pb2.PeriodicTask] = {}
    for app in apps:
        try:
            entries = periodic.entries_of(app)
        except InvalidTaskSpec as exc:
            raise TaskModuleError(str(exc)) from None
        declared.update((entry.name, codec.periodic_task(entry)) for entry in entries)
    return tuple(declared.values())
