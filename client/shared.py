"""Celery's ``shared_task``: tasks declared without an app, for libraries and Django apps.

A reusable package cannot import the project's app, so it writes::

    from client import shared_task

    @shared_task
    def send_welcome_email(user_id): ...

The task is registered on every Celeriac app of the process, those that exist and those created
later, under the same name; calling it (``send_welcome_email.delay(1)``) goes through the
*current app*: the most recently created one that is still alive, as Celery's default. This is
the one place with process-wide state, because that is what ``shared_task`` means.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from client.errors import ConfigurationError

if TYPE_CHECKING:
    from client.app import Celeriac
    from client.task import Task

# Every app created in this process, oldest first (weakly: a dropped app is gone from here).
_apps: list[weakref.ref[Celeriac]] = []
# Every shared task declared: the function, its name (None: module.function) and its options.
_declared: list[tuple[Callable[..., Any], str | None, dict[str, Any]]] = []


def app_created(app: Celeriac) -> None:
    """Called by every new app: it gets the shared tasks declared so far."""
    _apps[:] = [ref for ref in _apps if ref() is not None]
    _apps.append(weakref.ref(app))
    for function, name, options in _declared:
        app.task(name=name, **options)(function)


def live_apps() -> list[Celeriac]:
    """The apps of this process that are still alive, oldest first."""
    return [app for ref in _apps if (app := ref()) is not None]


def current_app() -> Celeriac:
    """The most recently created app that is still alive.

    Raises:
        ConfigurationError: No app exists yet.
    """
    apps = live_apps()
    if not apps:
        raise ConfigurationError(
            "a shared task was used before any Celeriac app exists: create the app first "
            "(import the module that defines it)"
        )
    return apps[-1]


class SharedTask:
    """A shared task as its declaring module sees it: the current app's task of that name."""

    def __init__(self, function: Callable[..., Any], name: str | None) -> None:
        self._function = function
        self._name = name
        self.__wrapped__ = function
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__

    def __repr__(self) -> str:
        return f"<shared task {self._name or self._function.__qualname__}>"

    @property
    def task(self) -> Task:
        """The current app's registered task."""
        app = current_app()
        for task in app.tasks.values():
            if task.run is self._function:
                return task
        raise ConfigurationError(f"{self!r} is not registered with {app!r}")  # pragma: no cover

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task like a function, as with any task."""
        return self.task(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)


@overload
def shared_task(function: Callable[..., Any], /) -> SharedTask: ...


@overload
def shared_task(
    function: None = None, /, *, name: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], SharedTask]: ...


def shared_task(
    function: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any
) -> SharedTask | Callable[[Callable[..., Any]], SharedTask]:
    """Declare a task for every app: ``@shared_task`` or ``@shared_task(bind=True, ...)``.

    Takes the options of ``@app.task``; they are checked on the first app that registers it.
    """

    def declare(fn: Callable[..., Any]) -> SharedTask:
        _declared.append((fn, name, dict(options)))
        for app in live_apps():
            app.task(name=name, **options)(fn)
        return SharedTask(fn, name)

    return declare(function) if function is not None else declare
