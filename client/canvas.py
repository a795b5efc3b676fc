"""Signatures and groups: tasks with their arguments, to send later or many at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from client.errors import InvalidTaskSpec

if TYPE_CHECKING:
    from client.app import Celeriac
    from client.result import AsyncResult, GroupResult


class Signature:
    """A task name with arguments and options (``add.s(1, 2)``), like Celery's signature.

    Attributes:
        app: The app that sends it.
        name: The task's registered name.
        args: Positional arguments.
        kwargs: Keyword arguments.
        options: Per-call options (see ``client.options.CallOptions``).
    """

    def __init__(
        self,
        app: Celeriac,
        name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})

    def __repr__(self) -> str:
        arguments = [repr(arg) for arg in self.args]
        arguments += [f"{key}={value!r}" for key, value in self.kwargs.items()]
        return f"{self.name}({', '.join(arguments)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Signature) and (
            (other.app, other.name, other.args, other.kwargs, other.options)
            == (self.app, self.name, self.args, self.kwargs, self.options)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like Celery's

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, like calling the function, with the signature's arguments first."""
        merged = self.clone(args, kwargs)
        return self.app.tasks[self.name](*merged.args, **merged.kwargs)

    def clone(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
        """Return a copy with extra arguments appended and options merged (new ones win)."""
        return Signature(
            self.app,
            self.name,
            (*self.args, *args),
            {**self.kwargs, **(kwargs or {})},
            {**self.options, **options},
        )

    def set(self, **options: Any) -> Signature:
        """Return a copy with these per-call options (queue, countdown, priority, ...)."""
        return self.clone(**options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task, with extra arguments appended to the signature's."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task; arguments are appended and options merged over the signature's."""
        merged = self.clone(args or (), kwargs, **options)
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


class group:
    """Signatures sent together: one batch submit per chunk, results read in batches.

    ``group(add.s(1, 1), add.s(2, 2))`` or ``group(add.s(i, i) for i in range(1000))``.

    Attributes:
        tasks: The signatures, in order.
    """

    def __init__(self, *tasks: Signature | Iterable[Signature]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        for task in tasks:
            if not isinstance(task, Signature):
                raise InvalidTaskSpec(
                    f"a group holds signatures such as add.s(1, 2), got {type(task).__name__}"
                )
        self.tasks: list[Signature] = list(tasks)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Any:
        return iter(self.tasks)

    def apply_async(self, **options: Any) -> GroupResult:
        """Send every task; ``options`` apply to all of them (each signature's own win).

        Returns:
            The group's result handle.

        The tasks go in chunks (``group_chunk_size``, one ``SubmitMany`` each), a few chunks
        in flight at once so that encoding overlaps the broker's work. Each chunk is accepted
        all or nothing; a failure names which tasks, by position, were accepted.

        Raises:
            InvalidTaskSpec: A task's options are invalid; nothing of its chunk was accepted,
                the chunks before it were, and chunks already sent after it may have been
                (the message says which).
            SerializationError: A task's arguments cannot be encoded; nothing was sent.
        """
        from client.result import GroupResult

        if not self.tasks:
            return GroupResult(None, [])
        return self._app().send_group(self._with(options))

    async def aapply_async(self, **options: Any) -> GroupResult:
        """Like :meth:`apply_async`, without blocking the event loop."""
        from client.result import GroupResult

        if not self.tasks:
            return GroupResult(None, [])
        return await self._app().asend_group(self._with(options))

    def delay(self) -> GroupResult:
        """Send every task (same as ``apply_async()``)."""
        return self.apply_async()

    def _with(self, options: Mapping[str, Any]) -> list[Signature]:
        if not options:
            return self.tasks
        return [
            Signature(s.app, s.name, s.args, s.kwargs, {**options, **s.options}) for s in self.tasks
        ]

    def _app(self) -> Celeriac:
        app = self.tasks[0].app
        if any(task.app is not app for task in self.tasks):
            raise InvalidTaskSpec("all tasks of a group must belong to the same app")
        return app
