"""Result handles: :class:`AsyncResult` for one task and :class:`GroupResult` for a group.

Waiting never polls. ``get(timeout=...)`` asks the broker to hold the call until the task is
ready, in chunks of at most ``result_chunk_wait`` seconds, so a wait with no timeout is a series
of long calls rather than a busy loop, and a dead broker is noticed within one chunk.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from client import states
from client.errors import RemoteTaskError, TaskNotFound, TimeoutError
from client.failures import rebuild_exception, revoked_exception
from client.records import ResultRecord, Submitted

if TYPE_CHECKING:
    from client.app import Celeriac
    from client.transport import Transport


class Deadline:
    """The time left for a wait that may span several server-side waits."""

    def __init__(self, timeout: float | None, chunk: float) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout}")
        self.timeout = timeout
        self._chunk = chunk
        self._end = None if timeout is None else time.monotonic() + timeout

    def next_wait(self) -> float:
        """Seconds the next server-side wait may last."""
        if self._end is None:
            return self._chunk
        return max(0.0, min(self._chunk, self._end - time.monotonic()))

    @property
    def expired(self) -> bool:
        """Whether the caller's timeout has passed."""
        return self._end is not None and time.monotonic() >= self._end


class AsyncResult:
    """A handle on one task's state and result, like Celery's ``AsyncResult``.

    ``AsyncResult(task_id, app=app)`` looks up any task by id. Reading ``state``, ``result`` and
    friends asks the broker each time until the task is ready; after that the final record is
    kept. An id the broker does not know reads as ``"UNKNOWN"``, never ``"PENDING"``.

    Attributes:
        id: The task id.
        app: The app whose broker holds the task.
    """

    def __init__(self, id: str, app: Celeriac | None = None) -> None:
        if app is None:
            raise TypeError("AsyncResult needs the app that talks to the broker: app=...")
        self.id = id
        self.app = app
        # In a workflow: the result of the step before (a chain's link, a chord's header).
        self.parent: AsyncResult | GroupResult | None = None
        self._final: ResultRecord | None = None
        # The transport's watch on this task's result (see client.call_stream): held here so
        # that the result pushed by the broker is kept exactly as long as someone can read it.
        self._watch: object | None = None

    @classmethod
    def submitted(cls, submitted: Submitted, app: Celeriac) -> AsyncResult:
        """The handle on a task this process just submitted (keeping its result watch)."""
        result = cls(submitted.task_id, app=app)
        result._watch = submitted.watch
        return result

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        """The task id (same as ``id``)."""
        return self.id

    @property
    def state(self) -> str:
        """The task's state, asked from the broker until the task is ready.

        One of ``PENDING``, ``STARTED``, ``RETRY``, ``SUCCESS``, ``FAILURE``, ``REVOKED``,
        ``UNKNOWN``, or the task's custom state (``update_state``).
        """
        return self._fetch().visible_state

    status = state

    def ready(self) -> bool:
        """Whether the task finished (SUCCESS, FAILURE or REVOKED)."""
        return self._fetch().ready

    def successful(self) -> bool:
        """Whether the task finished with SUCCESS."""
        return self._fetch().state == states.SUCCESS

    def failed(self) -> bool:
        """Whether the task finished with FAILURE."""
        return self._fetch().state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, the exception of a failed task, a custom state's meta, or None."""
        return outcome(self.app, self._fetch(), propagate=False)

    @property
    def info(self) -> Any:
        """Like ``result``; while the task runs, its custom state's meta or latest progress."""
        return self.result

    @property
    def traceback(self) -> str | None:
        """The worker's formatted traceback of a failed (or retrying) task, or None."""
        error = self._fetch().error
        return error.traceback or None if error else None

    @property
    def date_done(self) -> datetime | None:
        """When the task reached its final state (UTC), or None."""
        return self._fetch().date_done

    @property
    def retries(self) -> int:
        """Retries so far."""
        return self._fetch().retries

    @property
    def name(self) -> str | None:
        """The task's registered name, when the broker knows the task."""
        return self._fetch().name or None

    @property
    def queue(self) -> str | None:
        """The queue the task was sent to, when the broker knows the task."""
        return self._fetch().queue or None

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> Any:
        """Wait for the task to finish and return its result.

        Args:
            timeout: Seconds to wait; None waits as long as it takes.
            propagate: Re-raise the task's error (builtin types as themselves, others as
                ``RemoteTaskError``; a revoked task as ``TaskRevokedError``). When False, the
                exception is returned instead.
            interval: Accepted so that Celery code runs unchanged, and ignored: the wait is
                held at the broker, so there is no polling interval to tune.

        Raises:
            TimeoutError: The task did not finish in time (also a builtin ``TimeoutError``).
            TaskNotFound: The broker does not know this id.
            BrokerUnavailable: The broker could not be reached.
        """
        deadline = Deadline(timeout, self.app.config.result_chunk_wait)
        while True:
            record = self._fetch(deadline.next_wait())
            if record.ready:
                return outcome(self.app, record, propagate)
            self._check_waitable(record, deadline)

    def revoke(self, terminate: bool = False, reason: str = "") -> str:
        """Revoke the task: a queued or delayed task never runs; a running one is cancelled.

        Args:
            terminate: Also kill the task if it is running.
            reason: Stored in the REVOKED result.

        Returns:
            What happened: ``revoked``, ``cancel-sent``, ``already-finished`` or ``unknown``.
        """
        return self.app.transport.revoke([self.id], terminate, reason)[0]

    def forget(self) -> None:
        """Drop the stored result at the broker now; the id then reads as UNKNOWN."""
        self.app.transport.forget([self.id])
        self._final = None

    async def astate(self) -> str:
        """Like :attr:`state`, without blocking the event loop."""
        return (await self._afetch()).visible_state

    async def aready(self) -> bool:
        """Like :meth:`ready`, without blocking the event loop."""
        return (await self._afetch()).ready

    async def aresult(self) -> Any:
        """Like :attr:`result`, without blocking the event loop."""
        return outcome(self.app, await self._afetch(), propagate=False)

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Like :meth:`get`; awaiting it lets other coroutines run while the broker holds it."""
        deadline = Deadline(timeout, self.app.config.result_chunk_wait)
        while True:
            record = await self._afetch(deadline.next_wait())
            if record.ready:
                return outcome(self.app, record, propagate)
            self._check_waitable(record, deadline)

    async def arevoke(self, terminate: bool = False, reason: str = "") -> str:
        """Like :meth:`revoke`, without blocking the event loop."""
        return (await self.app.aio_transport.revoke([self.id], terminate, reason))[0]

    async def aforget(self) -> None:
        """Like :meth:`forget`, without blocking the event loop."""
        await self.app.aio_transport.forget([self.id])
        self._final = None

    def _fetch(self, wait: float = 0.0) -> ResultRecord:
        if self._final is None:
            return self._keep(self.app.transport.get_result(self.id, wait, self._watch))
        return self._final

    async def _afetch(self, wait: float = 0.0) -> ResultRecord:
        if self._final is None:
            transport = self.app.aio_transport
            return self._keep(await transport.get_result(self.id, wait, self._watch))
        return self._final

    def _keep(self, record: ResultRecord) -> ResultRecord:
        if record.ready:
            self._final = record  # final states never change, so stop asking
            self._watch = None
        return record

    def _check_waitable(self, record: ResultRecord, deadline: Deadline) -> None:
        if record.state == states.UNKNOWN:
            raise TaskNotFound(
                f"the broker has no task {self.id} (never sent, forgotten or expired)"
            )
        if deadline.expired:
            raise TimeoutError(
                f"task {self.id} not ready after {deadline.timeout:g}s "
                f"(state {record.visible_state})"
            )


class ResultSet:
    """Results of any tasks, read together; collected in batches, not one call per task.

    Attributes:
        results: One :class:`AsyncResult` per task, in order.
    """

    def __init__(self, results: Sequence[AsyncResult], app: Celeriac | None = None) -> None:
        self.results = list(results)
        self.app = app or (self.results[0].app if self.results else None)
        # In a workflow: the result of the step before the group.
        self.parent: AsyncResult | GroupResult | None = None
        self._unknown: list[str] = []
        # How many results at the start of the group are known to be final (see _next_chunk).
        self._settled = 0

    def __repr__(self) -> str:
        name = getattr(self, "id", None) or ""
        return f"<{type(self).__name__} {name} of {len(self.results)} tasks>".replace("  ", " ")

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult:
        return self.results[index]

    def get(
        self, timeout: float | None = None, propagate: bool = True, interval: float | None = None
    ) -> list[Any]:
        """Wait for every task and return their results in order.

        Args:
            timeout: Seconds to wait for all of them; None waits as long as it takes.
            propagate: Raise the first failed task's error (in group order); when False the
                exceptions take their places in the list.
            interval: Accepted for Celery compatibility and ignored (the wait is held at the
                broker).

        Raises:
            TimeoutError: Not all tasks finished in time.
        """
        deadline = self._deadline(timeout)
        while asked := self._next_chunk():
            records = self._transport().get_results(list(asked), deadline.next_wait())
            self._absorb(asked, records)
            self._check_waitable(deadline)
        return self._outcomes(propagate)

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Like :meth:`get`, without blocking the event loop."""
        deadline = self._deadline(timeout)
        while asked := self._next_chunk():
            transport = self._app().aio_transport
            records = await transport.get_results(list(asked), deadline.next_wait())
            self._absorb(asked, records)
            self._check_waitable(deadline)
        return self._outcomes(propagate)

    def ready(self) -> bool:
        """Whether every task finished."""
        self._refresh()
        return not self._pending()

    def completed_count(self) -> int:
        """How many tasks finished with SUCCESS."""
        self._refresh()
        return sum(1 for result in self.results if _final_state(result) == states.SUCCESS)

    def successful(self) -> bool:
        """Whether every task finished with SUCCESS."""
        return self.completed_count() == len(self.results)

    def failed(self) -> bool:
        """Whether any task finished with FAILURE."""
        self._refresh()
        return any(_final_state(result) == states.FAILURE for result in self.results)

    def revoke(self, terminate: bool = False, reason: str = "") -> list[str]:
        """Revoke every task of the group in one call; returns one outcome per task."""
        if not self.results:
            return []
        return self._transport().revoke([r.id for r in self.results], terminate, reason)

    def forget(self) -> None:
        """Drop every stored result of the group in one call."""
        if self.results:
            self._transport().forget([r.id for r in self.results])
        for result in self.results:
            result._final = None

    def _app(self) -> Celeriac:
        assert self.app is not None  # only reached with pending results, which carry the app
        return self.app

    def _transport(self) -> Transport:
        return self._app().transport

    def _deadline(self, timeout: float | None) -> Deadline:
        chunk = self.app.config.result_chunk_wait if self.app else 1.0
        return Deadline(timeout, chunk)

    def _pending(self) -> list[str]:
        """Every unfinished task's id, once each, in group order (a pass over the whole group)."""
        return list(_by_id(result for result in self.results if result._final is None))

    def _next_chunk(self) -> dict[str, list[AsyncResult]]:
        """The first unfinished tasks (a chunk's worth of ids), by id; empty once all finished.

        ``get()`` asks for one chunk at a time until the whole group has finished. Scanning the
        whole group before every call made collecting a 20,000-task group cost ~14 µs per task
        of client CPU, so the scan starts after the leading run of finished tasks.
        """
        results = self.results
        while self._settled < len(results) and results[self._settled]._final is not None:
            self._settled += 1
        size = self._app().config.group_chunk_size if self._settled < len(results) else 0
        chunk: dict[str, list[AsyncResult]] = {}
        for index in range(self._settled, len(results)):
            if len(chunk) >= size:
                break
            result = results[index]
            if result._final is None:
                chunk.setdefault(result.id, []).append(result)
        return chunk

    def _refresh(self) -> None:
        pending = [result for result in self.results if result._final is None]
        size = self._app().config.group_chunk_size if pending else 1
        for start in range(0, len(pending), size):
            asked = _by_id(pending[start : start + size])
            self._absorb(asked, self._transport().get_results(list(asked), 0.0))

    def _absorb(
        self, asked: Mapping[str, list[AsyncResult]], records: Sequence[ResultRecord]
    ) -> None:
        self._unknown = [record.task_id for record in records if record.state == states.UNKNOWN]
        for record in records:
            for result in asked.get(record.task_id, ()):
                result._keep(record)

    def _check_waitable(self, deadline: Deadline) -> None:
        if self._unknown:
            raise TaskNotFound(f"the broker has no task(s) {', '.join(self._unknown[:5])}")
        if deadline.expired and (pending := self._pending()):
            raise TimeoutError(
                f"{len(pending)} of {len(self.results)} tasks not ready after {deadline.timeout:g}s"
            )

    def _outcomes(self, propagate: bool) -> list[Any]:
        app = self._app() if self.results else None
        return [
            outcome(app, result._final, propagate) if app and result._final else None
            for result in self.results
        ]


class GroupResult(ResultSet):
    """The results of a group: a :class:`ResultSet` with an id, which can be saved.

    Attributes:
        id: The group's id. It names something at the broker once :meth:`save` recorded it.
        results: One :class:`AsyncResult` per task, in submission order.
    """

    def __init__(
        self, id: str | None, results: Sequence[AsyncResult], app: Celeriac | None = None
    ) -> None:
        super().__init__(results, app)
        self.id: str = id or str(uuid.uuid4())

    def save(self) -> GroupResult:
        """Record the group at the broker so that :meth:`restore` finds it by id later.

        The broker holds it as a task that never runs (``celeriac.group``, waiting on the
        members) and keeps it, like any result, for the result TTL once every member finished.
        Saving the same id again is a no-op.
        """
        from client.workflow import barrier

        barrier(self._app(), self.id, [result.id for result in self.results])
        return self

    @classmethod
    def restore(cls, id: str, app: Celeriac | None = None) -> GroupResult | None:
        """The group saved as ``id``, or None when the broker holds no such group."""
        if app is None:
            raise TypeError("GroupResult.restore needs the app that talks to the broker: app=...")
        record = app.transport.get_result(id)
        if record.state == states.UNKNOWN or not record.depends_on:
            return None
        return cls(id, [AsyncResult(task_id, app=app) for task_id in record.depends_on], app)

    def delete(self) -> None:
        """Drop the saved group (not its members' results)."""
        self._transport().forget([self.id])


def _by_id(results: Iterable[AsyncResult]) -> dict[str, list[AsyncResult]]:
    """Results by task id, in first-seen order (a group may hold the same task twice)."""
    by_id: dict[str, list[AsyncResult]] = {}
    for result in results:
        by_id.setdefault(result.id, []).append(result)
    return by_id


def _final_state(result: AsyncResult) -> str | None:
    return result._final.state if result._final else None


def outcome(app: Celeriac, record: ResultRecord, propagate: bool) -> Any:
    """Interpret a result record: the value, or the exception (raised when ``propagate``).

    Args:
        app: Decodes payloads with its content-type policy.
        record: The record to interpret.
        propagate: Raise a failed or revoked task's exception instead of returning it.
    """
    if record.state == states.SUCCESS:
        return app.decode(record.result) if record.result else None
    if record.state in states.EXCEPTION_STATES:
        if record.state == states.REVOKED:
            exception: BaseException = revoked_exception(record.task_id, record.error)
        elif record.error is not None:
            exception = rebuild_exception(record.error)
        else:
            exception = RemoteTaskError("UnknownError", f"task {record.task_id} failed")
        if propagate and record.state != states.RETRY:
            raise exception
        return exception
    # Running or waiting: a custom state's meta, else the latest progress, else nothing.
    encoded = record.result or record.progress
    return app.decode(encoded) if encoded else None
