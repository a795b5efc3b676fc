"""The application object: the task registry, the configuration and the way to the broker."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, overload

from client import periodic, shared, signals
from client.canvas import Signature
from client.chunks import group_chunks
from client.conf import AppConf, settings_of
from client.config import ClientConfig
from client.control import Control
from client.errors import ContentTypeRefused, InvalidTaskSpec
from client.options import (
    NO_CALL_OPTIONS,
    CallOptions,
    build_spec,
    encode_spec,
    resolve_options,
)
from client.publishing import after_publish, before_publish
from client.records import EncodedValue, ResolvedOptions, ServerInfo, SubmitSpec
from client.result import AsyncResult, GroupResult
from client.serialization import decode
from client.task import (
    ACCUMULATE,
    Task,
    TaskOptions,
    accumulate,
    check_task_options,
    class_defaults,
)
from client.transport import AsyncTransport, Transport

logger = logging.getLogger(__name__)

# Inside the class, ``Task`` names the app's base task class (``app.Task``, as in Celery).
_Task = Task

# A task name and its call options (name, type, value): signatures with equal keys share options.
_OptionsKey = tuple[str, frozenset[tuple[str, type, Any]]]
_NO_OPTIONS: frozenset[tuple[str, type, Any]] = frozenset()


class Celeriac:
    """A Celeriac application, like Celery's ``Celery`` app.

    ``Celeriac("tasks", broker="localhost:7475")`` creates an app; ``@app.task`` registers
    tasks; ``app.send_task(name, ...)`` sends a task by name. Nothing connects until the first
    call that needs the broker, so task modules import without one.

    Args:
        main: The app's name; tasks defined in ``__main__`` are named after it.
        broker: Broker address (``host:port`` or ``grpc://host:port``); defaults to
            ``CELERIAC_BROKER``, then ``127.0.0.1:7475``.
        **config: Any :class:`~client.config.ClientConfig` field, e.g. ``connect_timeout=2``,
            ``task_routes={"tasks.*": {"queue": "math"}}``, ``allow_pickle=True``.

    Attributes:
        main: The app's name.
        tasks: Registered tasks, name to :class:`~client.task.Task`.
        control: Remote control of tasks and workers (``app.control.revoke(ids)``,
            ``app.control.inspect().active()``; see :mod:`client.control`).
    """

    # The default base class of this app's tasks; ``class MyTask(app.Task)`` as in Celery.
    Task: ClassVar[type[_Task]] = _Task

    def __init__(self, main: str | None = None, broker: str | None = None, **config: Any) -> None:
        self.main = main
        self.tasks: dict[str, Task] = {}
        self.control = Control(self)
        self._conf = ClientConfig.from_env(broker=broker, **config)
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._aio_transport: AsyncTransport | None = None
        # Task name -> (task options, configuration, what they resolve to without call options).
        self._plain_options: dict[
            str, tuple[TaskOptions | None, ClientConfig, ResolvedOptions]
        ] = {}
        # Celery's per-app signal, sent once before the periodic tasks are read (see configure).
        self.on_after_configure = signals.Signal("on_after_configure")
        self._configured = False
        # Celery's built-in task (``Task.replace`` with a group ends in it); every app has it,
        # so every worker runs it.
        self.task(name=ACCUMULATE, base=_Task)(accumulate)
        shared.app_created(self)  # the shared tasks declared so far are this app's too

    def __repr__(self) -> str:
        return f"<Celeriac {self.main or '__main__'} broker={self._conf.broker}>"

    @property
    def config(self) -> ClientConfig:
        """The app's configuration, as one frozen, checked :class:`ClientConfig`."""
        return self._conf

    @config.setter
    def config(self, config: ClientConfig) -> None:
        # Open connections were made with the old settings; the next call reconnects.
        self.close()
        self._conf = config

    @property
    def conf(self) -> AppConf:
        """Celery's ``app.conf``: read settings, ``update(...)`` them, or assign one.

        See :mod:`client.conf`; Celery's setting names work too (``task_default_queue``).
        """
        return AppConf(self)

    @conf.setter
    def conf(self, config: ClientConfig | AppConf) -> None:
        self.config = config._app.config if isinstance(config, AppConf) else config

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        force: bool = False,
    ) -> None:
        """Import ``<package>.tasks`` of each package, as Celery's method does (now, not lazily).

        A package without that module is skipped; a package that does not exist, or a tasks
        module that fails to import, raises.

        Args:
            packages: Package names, or a callable returning them (Django's installed apps).
            related_name: The module to import in each package.
            force: Accepted for Celery code (discovery is never deferred here).
        """
        names = packages() if callable(packages) else packages or ()
        for package in names:
            module = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise

    def configure(self) -> None:
        """Send ``on_after_configure`` once (a worker does before it reads the schedule).

        Celery sends it when the app's configuration is first read; receivers typically call
        :meth:`add_periodic_task`.
        """
        if not self._configured:
            self._configured = True
            self.on_after_configure.send(self, source=self.conf)

    def add_periodic_task(
        self,
        schedule: object,
        sig: Signature | _Task,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | Iterable[Any] = (),
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add a ``beat_schedule`` entry, with Celery's signature; returns its name.

        ``app.add_periodic_task(30.0, cleanup.s(), name="cleanup")`` or with
        ``crontab(...)``, a timedelta or ``schedule(...)``. Without a name the entry is named
        after the signature (``repr``), as in Celery. The entry is checked now.

        Raises:
            InvalidTaskSpec: The schedule, the task or an option is invalid.
        """
        if isinstance(sig, _Task):
            sig = sig.s()
        merged = sig.clone(args, dict(kwargs or {}), **opts)
        key = name or repr(merged)
        entry = {
            "task": merged.name,
            "schedule": schedule,
            "args": merged.args,
            "kwargs": merged.kwargs,
            "options": merged.options,
        }
        periodic.entry_from(self, key, entry)
        self.conf.update(beat_schedule={**self.config.beat_schedule, key: entry})
        return key

    def config_from_object(self, source: object, namespace: str | None = None) -> None:
        """Load settings from a module, an object or a dotted path, as Celery's method does.

        ``app.config_from_object("proj.celeryconfig")`` reads its lowercase settings;
        ``app.config_from_object("django.conf:settings", namespace="CELERY")`` reads
        ``CELERY_BROKER_URL`` and the like. See :mod:`client.conf` for what is mapped,
        skipped with a warning, or refused.

        Raises:
            ConfigurationError: The source cannot be loaded, or a setting is unknown or invalid.
        """
        self.conf.update(settings_of(source, namespace))

    @overload
    def task(self, function: Callable[..., Any], /) -> _Task: ...

    @overload
    def task(
        self, function: None = None, /, *, name: str | None = None, **options: Any
    ) -> Callable[[Callable[..., Any]], _Task]: ...

    def task(
        self, function: Callable[..., Any] | None = None, /, *, name: str | None = None,
        **options: Any,
    ) -> _Task | Callable[[Callable[..., Any]], _Task]:  # fmt: skip
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., **options)``.

        Args:
            function: The function, when used bare.
            name: The task's name; ``module.function`` by default.
            **options: :class:`~client.task.TaskOptions` fields (``bind``, ``max_retries``,
                ``autoretry_for``, ``queue``, ``time_limit``, ...), and ``base``: a
                :class:`~client.task.Task` subclass to build the task from (class-based tasks
                with hooks, as in Celery).

        Raises:
            InvalidTaskSpec: An option is unknown or invalid.
        """
        check_task_options(options)
        base = options.pop("base", None) or self.Task
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise InvalidTaskSpec(f"base must be a subclass of client.Task, got {base!r}")
        task_options = TaskOptions(**{**class_defaults(base), **options})

        def register(fn: Callable[..., Any]) -> _Task:
            module = self.main if fn.__module__ == "__main__" and self.main else fn.__module__
            task = base(self, name or f"{module}.{fn.__qualname__}", fn, task_options)
            self.tasks[task.name] = task
            return task

        return register(function) if function is not None else register

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send a task by name; the task's code need not be importable here.

        Args:
            name: The registered task name, e.g. ``"tasks.add"``.
            args: Positional arguments.
            kwargs: Keyword arguments.
            **options: Per-call options, see :class:`~client.options.CallOptions`.

        Returns:
            The result handle.

        Raises:
            InvalidTaskSpec: An option is invalid, or the broker refused the spec.
            SerializationError: An argument cannot be encoded; nothing was sent.
            BrokerUnavailable: The broker could not be reached in time.
            QueueFull: The queue is at capacity.
            PayloadTooLarge: The encoded arguments exceed the broker's limit.
        """
        if options.get("link") or options.get("link_error"):
            from client.workflow import send

            return send(self, Signature(self, name, args or (), kwargs, options))  # type: ignore[return-value]
        spec = before_publish(self.build_spec(name, args, kwargs, options), args, kwargs)
        result = AsyncResult.submitted(self.transport.submit([spec])[0], self)
        after_publish(spec, args, kwargs)
        return result

    async def asend_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Like :meth:`send_task`, without blocking the event loop."""
        spec = before_publish(self.build_spec(name, args, kwargs, options), args, kwargs)
        result = AsyncResult.submitted((await self.aio_transport.submit([spec]))[0], self)
        after_publish(spec, args, kwargs)
        return result

    def send_group(self, signatures: Iterable[Signature]) -> GroupResult:
        """Send signatures in batches (one ``SubmitMany`` per chunk); see ``client.group``."""
        signatures = list(signatures)
        specs = self._group_specs(signatures)
        chunks = self._chunks(specs, self.transport.server_info())
        submitted = self.transport.submit_chunks(chunks)
        _after_group_publish(signatures, specs)
        return GroupResult(None, [AsyncResult(s.task_id, app=self) for s in submitted], self)

    async def asend_group(self, signatures: Iterable[Signature]) -> GroupResult:
        """Like :meth:`send_group`, without blocking the event loop."""
        signatures = list(signatures)
        specs = self._group_specs(signatures)
        chunks = self._chunks(specs, await self.aio_transport.server_info())
        submitted = await self.aio_transport.submit_chunks(chunks)
        _after_group_publish(signatures, specs)
        return GroupResult(None, [AsyncResult(s.task_id, app=self) for s in submitted], self)

    def signature(
        self,
        name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A signature of a task by name, which need not be importable here (Celery's method)."""
        return Signature(self, name, args, kwargs, options)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        """Return a handle on a task sent earlier (same as ``AsyncResult(task_id, app=app)``)."""
        return AsyncResult(task_id, app=self)

    def build_spec(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> SubmitSpec:
        """Resolve options and encode arguments for one task, without sending it."""
        task = self.tasks.get(name)
        task_options = task.options if task else None
        if not options:
            resolved = self._options_without_call_options(name, task_options)
            return encode_spec(resolved, args, kwargs, allow_pickle=self._conf.allow_pickle)
        call = CallOptions.parse(options)
        return build_spec(name, args, kwargs, call, task=task_options, config=self._conf)

    def _options_without_call_options(self, name: str, task: TaskOptions | None) -> ResolvedOptions:
        # A plain delay() resolves to the same options every time, given the same task options
        # and configuration (both frozen), so they are resolved once per task name. A task with
        # ``expires`` is the exception: its expiry is counted from now.
        cached = self._plain_options.get(name)
        if cached is not None and cached[0] is task and cached[1] is self._conf:
            return cached[2]
        resolved = resolve_options(name, NO_CALL_OPTIONS, task=task, config=self._conf)
        if task is None or task.expires is None:
            self._plain_options[name] = (task, self._conf, resolved)
        return resolved

    def decode(self, encoded: EncodedValue) -> Any:
        """Decode a result, meta or progress payload with this app's content-type policy.

        Raises:
            ContentTypeRefused: The content type is not in ``accept_content``.
            SerializationError: The payload is malformed.
        """
        if encoded.content_type not in self._conf.accept_content:
            raise ContentTypeRefused(
                f"result content type {encoded.content_type!r} is not accepted "
                f"(accept_content={list(self._conf.accept_content)})"
            )
        return decode(encoded.body, encoded.content_type, allow_pickle=self._conf.allow_pickle)

    def server_info(self) -> ServerInfo:
        """The broker's version, features and limits."""
        return self.transport.server_info()

    @property
    def transport(self) -> Transport:
        """The blocking connection to the broker, created on first use."""
        with self._lock:
            if self._transport is None:
                self._transport = Transport(self._conf)
            return self._transport

    @property
    def aio_transport(self) -> AsyncTransport:
        """The asyncio connection to the broker (one channel per event loop)."""
        with self._lock:
            if self._aio_transport is None:
                self._aio_transport = AsyncTransport(self._conf)
            return self._aio_transport

    def close(self) -> None:
        """Close the blocking connection; the app reconnects if used again."""
        with self._lock:
            transport, self._transport = self._transport, None
            self._aio_transport = None
        if transport is not None:
            transport.close()

    async def aclose(self) -> None:
        """Close the running loop's connection and the blocking one."""
        with self._lock:
            aio_transport, self._aio_transport = self._aio_transport, None
        if aio_transport is not None:
            await aio_transport.close()
        self.close()

    def __enter__(self) -> Celeriac:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Celeriac:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _group_specs(self, signatures: Sequence[Signature]) -> list[SubmitSpec]:
        # Encode everything first: a bad argument anywhere fails before anything is sent.
        # Signatures of one task with equal options (the usual group) share one resolution.
        now = datetime.now(UTC)
        resolved: dict[_OptionsKey, ResolvedOptions] = {}
        allow_pickle = self._conf.allow_pickle
        specs = []
        for signature in signatures:
            key = _shared_options_key(signature)
            if key is None:
                specs.append(
                    self.build_spec(
                        signature.name, signature.args, signature.kwargs, signature.options
                    )
                )
                continue
            options = resolved.get(key)
            if options is None:
                options = resolved[key] = self._resolve(signature.name, signature.options, now)
            specs.append(
                encode_spec(options, signature.args, signature.kwargs, allow_pickle=allow_pickle)
            )
        if signals.before_task_publish.receivers:
            specs = [
                before_publish(spec, s.args, s.kwargs)
                for spec, s in zip(specs, signatures, strict=True)
            ]
        return specs

    def _resolve(
        self, name: str, options: Mapping[str, Any], now: datetime | None = None
    ) -> ResolvedOptions:
        task = self.tasks.get(name)
        return resolve_options(
            name,
            CallOptions.parse(options),
            task=task.options if task else None,
            config=self._conf,
            now=now,
        )

    def _chunks(self, specs: list[SubmitSpec], info: ServerInfo) -> Iterator[Sequence[SubmitSpec]]:
        """The group's SubmitMany chunks, within the broker's batch and message limits."""
        configured = self._conf.group_chunk_size
        count = max(1, min(configured, info.max_batch or configured))
        return group_chunks(specs, count, info.max_message_bytes)


def _shared_options_key(signature: Signature) -> _OptionsKey | None:
    """What makes signatures resolve alike, or None when this one must resolve on its own."""
    if not signature.options:  # the usual group: `task.s(...)` for every member
        return signature.name, _NO_OPTIONS
    if "task_id" in signature.options:
        return None  # one id per task, so nothing to share
    try:
        # The type is part of the key: priority=True must fail as itself, not pass as 1.
        options = frozenset((k, type(v), v) for k, v in signature.options.items())
    except TypeError:  # an unhashable option value, such as a headers dict
        return None
    return signature.name, options


def _after_group_publish(signatures: Sequence[Signature], specs: Sequence[SubmitSpec]) -> None:
    if signals.after_task_publish.receivers:
        for signature, spec in zip(signatures, specs, strict=True):
            after_publish(spec, signature.args, signature.kwargs)
