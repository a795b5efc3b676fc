"""Celery's canvas: signatures, chains, groups and chords, held by the broker as dependencies.

``add.s(2, 2) | add.s(4) | add.s(8)``, ``chain(...)``, ``group(...)``, ``chord(header)(body)``
and ``link=``/``link_error=`` nest in any combination. Sending one submits every task of the
workflow at once, parents first (client.workflow), each naming the tasks it waits for; the
broker releases each task when its parents finish, with their results for the worker to put in
front of its arguments. No client or worker stays behind to drive it, so a workflow survives
the client going away, a worker dying and (durable by default) a broker restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

from client.errors import InvalidTaskSpec

if TYPE_CHECKING:
    from client.app import Celeriac
    from client.result import AsyncResult, GroupResult

Canvas = Union["Signature", "chain", "group", "chord"]


class Signature:
    """A task name with arguments and options (``add.s(1, 2)``), like Celery's signature.

    Arguments given when it is sent or called go in front of its own (Celery's partials:
    ``add.s(2).delay(8)`` runs ``add(8, 2)``), as does a parent's result in a workflow; an
    immutable signature (``add.si(2, 2)``) takes neither.

    Attributes:
        app: The app that sends it.
        name: The task's registered name.
        args: Positional arguments.
        kwargs: Keyword arguments.
        options: Per-call options (see ``client.options.CallOptions``), plus ``link`` and
            ``link_error`` lists of callbacks.
        immutable: Whether it ignores arguments from its parent or its caller.
    """

    def __init__(
        self,
        app: Celeriac,
        name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
    ) -> None:
        self.app = app
        self.name = name
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable

    def __repr__(self) -> str:
        arguments = [repr(arg) for arg in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        return f"{self.name}{'!' if self.immutable else ''}({', '.join(arguments)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and (
            (other.app, other.name, other.args, other.kwargs, other.options, other.immutable)
            == (self.app, self.name, self.args, self.kwargs, self.options, self.immutable)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like Celery's

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, like calling the function, with extra arguments in front."""
        merged = self.clone(args, kwargs)
        return self.app.tasks[self.name](*merged.args, **merged.kwargs)

    def __or__(self, other: Canvas) -> chain:
        return chain(self, other)

    def clone(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with extra arguments in front (none for an immutable one), options merged."""
        if self.immutable:
            args, kwargs = (), None
        return Signature(
            self.app,
            self.name,
            (*args, *self.args),
            {**self.kwargs, **(kwargs or {})},
            {**self.options, **options},
            immutable=self.immutable,
        )

    def set(self, **options: Any) -> Signature:
        """Return a copy with these per-call options (queue, countdown, priority, ...)."""
        return self.clone(**options)

    def link(self, callback: Canvas) -> Canvas:
        """Run ``callback`` with this task's result once it succeeds; returns ``callback``."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` if this task fails (see worker.parents for its arguments)."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task, with extra arguments in front of the signature's."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task; arguments go in front and options are merged over the signature's."""
        merged = self.clone(args or (), kwargs, **options)
        if _has_callbacks(merged.options):
            from client.workflow import send

            result = send(merged.app, merged)
            assert not isinstance(result, list)
            return result  # type: ignore[return-value]
        return self.app.send_task(merged.name, merged.args, merged.kwargs, **merged.options)

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Like :meth:`delay`, without blocking the event loop."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Like :meth:`apply_async`, without blocking the event loop."""
        merged = self.clone(args or (), kwargs, **options)
        return await self.app.asend_task(merged.name, merged.args, merged.kwargs, **merged.options)


class chain:
    """Tasks run one after another, each receiving the result of the one before.

    ``chain(add.s(2, 2), add.s(4), add.s(8))`` or ``add.s(2, 2) | add.s(4) | add.s(8)``;
    a group in a chain is a chord (the next step receives the list of its results). Sending it
    returns the last task's result, whose ``parent`` is the one before. When a link fails, the
    rest never run and end FAILURE with that link's error (Celery 5's behaviour), so
    ``get()`` on the result raises it.
    """

    options: dict[str, Any]
    tasks: list[Canvas]

    def __init__(self, *tasks: Canvas | Iterable[Canvas], **options: Any) -> None:
        flat: list[Canvas] = []
        for task in _members(tasks, "a chain"):
            if isinstance(task, chain) and not task.options:
                flat.extend(task.tasks)
            else:
                flat.append(task)
        if not flat:
            raise InvalidTaskSpec("a chain needs at least one task")
        self.tasks = flat
        self.options = dict(options)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks))

    def __or__(self, other: Canvas) -> chain:
        return chain(*self.tasks, other) if not self.options else chain(self, other)

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the chain (Celery's ``chain(...)()``)."""
        return self.apply_async(args, kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the chain; arguments go in front of the first task's."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send every task of the chain at once; the broker runs them in turn.

        ``link_error`` applies to every task (each failing task calls it); ``link`` runs after
        the last one; other options apply to every task unless a task sets its own.
        """
        from client.workflow import send

        first, *rest = self.tasks
        whole = chain(_with_args(first, args, kwargs), *rest, **{**self.options, **options})
        return send(_app_of(self.tasks), whole)  # type: ignore[return-value]


class group:
    """Tasks run in parallel; sent in batches (one ``SubmitMany`` per chunk).

    ``group(add.s(1, 1), add.s(2, 2))`` or ``group(add.s(i, i) for i in range(1000))``.
    Members may be chains, groups or chords too. In a chain, the next step receives the list
    of the group's results (a chord); nested groups' results are flattened into that list.

    Attributes:
        tasks: The members, in order.
    """

    def __init__(self, *tasks: Canvas | Iterable[Canvas], **options: Any) -> None:
        self.tasks: list[Canvas] = _members(tasks, "a group")
        self.options = dict(options)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Any:
        return iter(self.tasks)

    def __or__(self, other: Canvas) -> chain:
        return chain(self, other)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        """Send the group (Celery's ``group(...)()``)."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        """Send every task; arguments go in front of each member's, options apply to all.

        Returns:
            The group's result handle.

        A group of plain signatures goes in chunks (``group_chunk_size``, one ``SubmitMany``
        each), a few chunks in flight at once so that encoding overlaps the broker's work. Each
        chunk is accepted all or nothing; a failure names which tasks, by position, were
        accepted.

        Raises:
            InvalidTaskSpec: A task's options are invalid; nothing of its chunk was accepted,
                the chunks before it were, and chunks already sent after it may have been
                (the message says which).
            SerializationError: A task's arguments cannot be encoded; nothing was sent.
        """
        from client.result import GroupResult

        if not self.tasks:
            return GroupResult(None, [])
        options = {**self.options, **options}
        members = [_with_args(task, args, kwargs) for task in self.tasks]
        if not self._plain(members, options):
            from client.workflow import send

            result = send(_app_of(members), group(*members, **options))
            assert not isinstance(result, list)
            return result  # type: ignore[return-value]
        return _app_of(members).send_group(_with_options(members, options))  # type: ignore[arg-type]

    async def aapply_async(self, **options: Any) -> GroupResult:
        """Like :meth:`apply_async` for a group of plain signatures, without blocking."""
        from client.result import GroupResult

        if not self.tasks:
            return GroupResult(None, [])
        options = {**self.options, **options}
        if not self._plain(self.tasks, options):
            raise InvalidTaskSpec("send a group holding workflows with apply_async()")
        members = _with_options(self.tasks, options)
        return await _app_of(self.tasks).asend_group(members)  # type: ignore[arg-type]

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        """Send every task (same as ``apply_async(args, kwargs)``)."""
        return self.apply_async(args, kwargs)

    @staticmethod
    def _plain(members: list[Canvas], options: Mapping[str, Any]) -> bool:
        return not _has_callbacks(options) and all(
            isinstance(task, Signature) and not _has_callbacks(task.options) for task in members
        )


class chord:
    """A group whose results go, as a list in member order, to a body once all succeeded.

    ``chord(add.s(i, i) for i in range(10))(tsum.s())`` or ``chord(header, body)()``. The
    broker releases the body when the last member's result is recorded. When a member fails,
    the body never runs: it ends FAILURE with a ``ChordError`` naming the member, and its
    ``link_error`` callbacks run. Sending returns the body's result, whose ``parent`` is the
    header's :class:`~client.result.GroupResult`.
    """

    def __init__(
        self,
        header: group | Iterable[Canvas],
        body: Signature | None = None,
        **options: Any,
    ) -> None:
        self.header = header if isinstance(header, group) else group(header)
        self.body = body
        self.options = dict(options)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def __or__(self, other: Canvas) -> chain:
        return chain(self, other)

    def __call__(self, body: Signature | None = None, **options: Any) -> AsyncResult:
        """Send the chord, with ``body`` as its body when given (``chord(header)(body)``)."""
        whole = chord(self.header, body or self.body, **self.options)
        return whole.apply_async(**options)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the header's tasks and the body at once; arguments go to every member."""
        from client.workflow import send

        if self.body is None:
            raise InvalidTaskSpec("a chord needs a body: chord(header)(body) or chord(h, body)")
        header = group(*(_with_args(task, args, kwargs) for task in self.header.tasks))
        whole = chord(header, self.body, **{**self.options, **options})
        return send(_app_of([*header.tasks, self.body]), whole)  # type: ignore[return-value]

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the chord (same as ``apply_async(args, kwargs)``)."""
        return self.apply_async(args, kwargs)


_CANVAS_TYPES = (Signature, chain, group, chord)


def _members(tasks: tuple[Any, ...], where: str) -> list[Canvas]:
    """The members given as arguments, or as one iterable (a generator of signatures)."""
    if len(tasks) == 1 and not isinstance(tasks[0], _CANVAS_TYPES):
        tasks = tuple(tasks[0])
    for task in tasks:
        if not isinstance(task, _CANVAS_TYPES):
            raise InvalidTaskSpec(
                f"{where} holds signatures such as add.s(1, 2) (or chains, groups, chords), "
                f"got {type(task).__name__}"
            )
    return list(tasks)


def _has_callbacks(options: Mapping[str, Any]) -> bool:
    return bool(options.get("link") or options.get("link_error"))


def _with_args(
    task: Canvas, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None
) -> Canvas:
    """``task`` with call arguments in front of its own (the first task for a chain)."""
    if not args and not kwargs:
        return task
    if isinstance(task, Signature):
        return task.clone(args or (), kwargs)
    if isinstance(task, chain):
        first, *rest = task.tasks
        return chain(_with_args(first, args, kwargs), *rest, **task.options)
    if isinstance(task, group):
        return group(*(_with_args(t, args, kwargs) for t in task.tasks), **task.options)
    return chord(
        group(*(_with_args(t, args, kwargs) for t in task.header.tasks)), task.body, **task.options
    )


def _with_options(members: Iterable[Canvas], options: Mapping[str, Any]) -> list[Canvas]:
    if not options:
        return list(members)
    return [
        Signature(s.app, s.name, s.args, s.kwargs, {**options, **s.options}, immutable=s.immutable)
        for s in members
        if isinstance(s, Signature)
    ]


def _app_of(tasks: Iterable[Canvas]) -> Celeriac:
    """The one app every signature in ``tasks`` (at any depth) belongs to."""
    apps = {id(s.app): s.app for s in signatures(tasks)}
    if len(apps) != 1:
        raise InvalidTaskSpec(
            "all tasks of a workflow must belong to the same app"
            if apps
            else "a workflow needs at least one task"
        )
    return next(iter(apps.values()))


def signatures(tasks: Iterable[Canvas]) -> Iterable[Signature]:
    """Every signature in ``tasks``, at any depth (bodies and callbacks included)."""
    stack = list(tasks)
    while stack:
        task = stack.pop()
        if isinstance(task, Signature):
            yield task
            stack.extend(task.options.get("link") or ())
            stack.extend(task.options.get("link_error") or ())
        elif isinstance(task, chain | group):
            stack.extend(task.tasks)
        else:
            stack.extend(task.header.tasks)
            if task.body is not None:
                stack.append(task.body)
