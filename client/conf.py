"""``app.conf``: the app's settings, read and changed the way Celery code does it.

The settings themselves stay one frozen :class:`~client.config.ClientConfig` (checked whole
whenever it changes); ``app.conf`` is a view on the app's current one that also takes Celery's
spellings::

    app.conf.update(task_always_eager=True, task_routes={"tasks.*": {"queue": "math"}})
    app.conf.task_default_queue = "low"          # Celery's name for default_queue
    app.config_from_object("proj.celeryconfig")  # a module's lowercase settings
    app.config_from_object("django.conf:settings", namespace="CELERY")  # CELERY_BROKER_URL, ...

Celery settings that mean something here are mapped to their field (:data:`CELERY_NAMES`).
Celery settings that Celeriac has no use for on the client (:data:`NOT_USED`: the result
backend, worker and beat settings, and any other name with a Celery prefix such as ``task_``)
are skipped with one WARNING naming them and why, so a Celery configuration module loads as it
is. Any other unknown name is refused with ``ConfigurationError``, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from client.config import ClientConfig
from client.errors import ConfigurationError

if TYPE_CHECKING:
    from client.app import Celeriac

logger = logging.getLogger(__name__)

# Celery's setting names that map onto a ClientConfig field.
CELERY_NAMES = {
    "broker_url": "broker",
    "broker_connection_timeout": "connect_timeout",
    "task_default_queue": "default_queue",
    "task_routes": "task_routes",
    "task_serializer": "task_serializer",
    "accept_content": "accept_content",
    "task_always_eager": "task_always_eager",
    "task_eager_propagates": "task_eager_propagates",
}

# Celery settings with no meaning for a Celeriac client, and where their concern lives instead.
NOT_USED = {
    "result_backend": "results are kept by the broker",
    "result_expires": "the broker's --result-ttl, or a task's result_ttl",
    "result_serializer": "a task's result uses its serializer",
    "result_accept_content": "accept_content covers results",
    "imports": "the worker's --tasks",
    "include": "the worker's --tasks",
    "task_acks_late": "tasks are always acknowledged after they run",
    "task_track_started": "STARTED is always tracked",
    "broker_connection_retry_on_startup": "clients retry until connect_timeout",
    "broker_transport_options": "there is no transport to configure",
    "worker_concurrency": "the worker's --concurrency",
    "worker_prefetch_multiplier": "the worker adapts its prefetch (--prefetch-max)",
    "worker_max_tasks_per_child": "not supported",
    "task_time_limit": "the worker's --time-limit or a task's time_limit",
    "task_soft_time_limit": "the worker's --soft-time-limit or a task's soft_time_limit",
    "beat_scheduler": "the broker runs periodic tasks; there is no beat process",
    "beat_max_loop_interval": "the broker runs periodic tasks; there is no beat process",
}

# The prefixes of Celery's setting names: an unknown name with one is a Celery setting Celeriac
# does not use (skipped with a warning); an unknown name without one is a mistake (refused).
CELERY_PREFIXES = (
    "task_", "worker_", "broker_", "result_", "beat_", "event_", "control_", "security_",
)  # fmt: skip

_FIELDS = frozenset(f.name for f in dataclasses.fields(ClientConfig))


class AppConf:
    """A live view of one app's settings: reads the current config, changes replace it."""

    __slots__ = ("_app",)

    def __init__(self, app: Celeriac) -> None:
        object.__setattr__(self, "_app", app)

    def __repr__(self) -> str:
        return f"<AppConf of {self._app!r}: {self._app.config!r}>"

    def __getattr__(self, name: str) -> Any:
        config = self._app.config
        field = CELERY_NAMES.get(name, name)
        try:
            return getattr(config, field)
        except AttributeError:
            raise AttributeError(f"no setting {name!r} (see client.config.ClientConfig)") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def update(self, settings: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        """Change settings by field name or Celery name; the whole config is checked again.

        Raises:
            ConfigurationError: A name is unknown, or a value is invalid (nothing changes).
        """
        changes = translate({**(settings or {}), **more})
        if changes:
            self._app.config = dataclasses.replace(self._app.config, **changes)

    def get(self, name: str, default: Any = None) -> Any:
        """A setting by field name or Celery name, or ``default``."""
        return getattr(self, name, default)


def translate(settings: Mapping[str, Any]) -> dict[str, Any]:
    """ClientConfig changes for settings named as fields or as Celery names.

    Raises:
        ConfigurationError: A name is neither (Celery's settings of :data:`NOT_USED` are
            skipped with a warning instead).
    """
    changes: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in settings.items():
        field = CELERY_NAMES.get(name, name)
        if field in _FIELDS:
            changes[field] = value
        elif name in NOT_USED:
            skipped.append(f"{name} ({NOT_USED[name]})")
        elif name.startswith(CELERY_PREFIXES):
            skipped.append(f"{name} (not a setting Celeriac uses)")
        else:
            raise ConfigurationError(
                f"unknown setting {name!r}: neither a Celeriac client setting "
                f"({', '.join(sorted(_FIELDS))}) nor a Celery setting Celeriac maps "
                f"({', '.join(sorted(CELERY_NAMES))})"
            )
    if skipped:
        logger.warning("Celery settings not used by Celeriac: %s", "; ".join(skipped))
    return changes


def settings_of(source: object, namespace: str | None = None) -> dict[str, Any]:
    """The settings an object or module defines, as Celery's ``config_from_object`` reads them.

    Args:
        source: A module, an object, or a dotted path (``"proj.celeryconfig"``,
            ``"django.conf:settings"``) to import.
        namespace: A prefix such as ``"CELERY"``: then only ``CELERY_*`` names count, upper
            case, the prefix removed (``CELERY_BROKER_URL`` is ``broker_url``).

    Raises:
        ConfigurationError: The path cannot be imported.
    """
    if isinstance(source, str):
        source = _import(source)
    names = [name for name in dir(source) if not name.startswith("_")]
    if namespace:
        prefix = f"{namespace}_"
        return {
            name[len(prefix) :].lower(): getattr(source, name)
            for name in names
            if name.startswith(prefix) and name.isupper()
        }
    known = _FIELDS | set(CELERY_NAMES) | set(NOT_USED)
    return {
        name: getattr(source, name)
        for name in names
        if name in known or name.startswith(CELERY_PREFIXES)
    }


def _import(path: str) -> object:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load settings from {path!r}: {exc}") from exc
