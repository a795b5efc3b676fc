"""Workflows: chain, group, chord and callbacks as dependencies between task records.

A task submitted with ``depends_on`` is held WAITING until the tasks it names have finished;
this module then releases it (queues it, with its parents' outcomes in ``record.inputs`` for
the worker), fails it, or drops it, by its :class:`~broker.core.model.DependencyMode`:

- IGNORE, RESULT, RESULTS wait for every parent to succeed. When one fails or is revoked, the
  task never runs: with one parent it ends in that parent's state with the parent's error (as
  Celery 5 marks the rest of a failed chain, so ``chain.get()`` raises the original error); with
  several (a chord body) it ends FAILURE with a ``ChordError`` naming the member, as Celery's
  does. A chord body is released when its last member's result is recorded.
- ERRBACK runs only when its one parent ends FAILURE by its own doing (it raised, or a chord
  body's member failed). A chain link failed by an earlier link does not run its errbacks
  (Celery calls only the errbacks of the task that raised); a parent that succeeds or is
  revoked drops its errbacks, which read as unknown afterwards.
- BARRIER never runs: it finishes SUCCESS once every parent finished (a saved GroupResult).

The broker never decodes a payload: results travel as the parents' payloads. Nothing here is
journaled apart from the task rows: ``depends_on`` is part of the spec, WAITING is a phase, and
:meth:`Workflows.restore` rebuilds the counts and the inputs from the restored records.

Cycles cannot form: a task may depend only on tasks the broker already holds, or on tasks
earlier in the same batch, or (brokers sharing a database) on unfinished tasks another broker
holds, named by :meth:`Workflows.parents_elsewhere`: their finish arrives as a restored
finished record (:meth:`Workflows.restore`), which settles what waits for them. Settling a
finished task's dependants runs as a loop over a work list, never recursion, so a failure at
the head of a 10,000-link chain costs no stack.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

from broker.core.events import EventKind
from broker.core.lifecycle import Lifecycle
from broker.core.model import (
    DependencyMode,
    ParentOutcome,
    Phase,
    TaskError,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from broker.errors import (
    BrokerError,
    DependencyCycle,
    InvalidArgument,
    UnknownDependency,
    WorkflowTooDeep,
    WorkflowTooLarge,
)

_ONE_PARENT = (DependencyMode.RESULT, DependencyMode.ERRBACK)
# Modes whose task waits for every parent to succeed.
_ON_SUCCESS = (DependencyMode.IGNORE, DependencyMode.RESULT, DependencyMode.RESULTS)


class Workflows:
    """The dependencies between held tasks of one broker.

    Args:
        lifecycle: The task state machine; its ``on_finished`` hook is taken.
        max_dependencies: Most parents one task may name.
        max_depth: Most links a chain of waiting tasks may have.
    """

    def __init__(self, lifecycle: Lifecycle, *, max_dependencies: int, max_depth: int) -> None:
        self._lifecycle = lifecycle
        self._max_dependencies = max_dependencies
        self._max_depth = max_depth
        # Unfinished parent id -> the waiting tasks that name it (once per mention).
        self._dependants: dict[str, list[TaskRecord]] = {}
        # Waiting task id -> how many of its parents have not finished.
        self._waiting: dict[str, int] = {}
        # Waiting task id -> its depth (1 + its deepest waiting parent's).
        self._depth: dict[str, int] = {}
        self._settling: deque[TaskRecord] | None = None
        self._pending_children: dict[str, list[TaskRecord]] = {}
        # Replacement id -> the tasks that replaced themselves by it (Task.replace).
        self._adopters: dict[str, list[TaskRecord]] = {}
        # Unfinished parents other brokers hold, while a submit or a restore naming them runs.
        self._elsewhere: Collection[str] = ()
        # Told the id of a replacement this broker does not hold, which another broker sharing
        # the database may (broker.cluster looks for it); None: such a replacement is lost.
        self.on_wait_elsewhere: Callable[[str], None] | None = None
        lifecycle.on_finished = self._finished
        lifecycle.on_replaced = self._replaced

    @property
    def waiting(self) -> int:
        """Tasks held for their parents."""
        return len(self._waiting)

    @contextlib.contextmanager
    def parents_elsewhere(self, task_ids: Collection[str]) -> Iterator[None]:
        """Within this block, ``task_ids`` are unfinished tasks other brokers hold.

        Brokers sharing a database read them before a submit or a restore that names them
        (broker.cluster): a task depending on one is accepted and waits for it.
        """
        self._elsewhere = task_ids
        try:
            yield
        finally:
            self._elsewhere = ()

    def awaits(self, task_id: str) -> bool:
        """Whether a held task waits for ``task_id`` to finish (as a parent or a replacement)."""
        return task_id in self._dependants or task_id in self._adopters

    def awaited_ids(self) -> list[str]:
        """Every task a held task waits for, held here or not."""
        return [*self._dependants, *self._adopters]

    # -- submit ------------------------------------------------------------------------------

    def check(self, specs: Sequence[TaskSpec], known: Mapping[str, TaskRecord]) -> None:
        """Refuse a batch whose dependencies cannot be held; accepts nothing.

        Args:
            specs: The batch, in order; a spec may depend on one before it.
            known: The tasks the broker holds.

        Raises:
            InvalidArgument: A mode does not fit its parents (the message starts ``tasks[i]``).
            UnknownDependency: A parent is neither held nor earlier in the batch.
            DependencyCycle: A task depends on itself, directly or through the batch.
            WorkflowTooLarge: More parents than max_dependencies.
            WorkflowTooDeep: A chain longer than max_workflow_depth.
        """
        later = {spec.task_id: index for index, spec in enumerate(specs) if spec.task_id}
        depths: dict[str, int] = {}
        for index, spec in enumerate(specs):
            if not spec.depends_on:
                if spec.dependency_mode is not DependencyMode.RESULT:
                    raise InvalidArgument(
                        f"tasks[{index}]: dependency_mode "
                        f"{spec.dependency_mode.name} without depends_on"
                    )
                continue
            if spec.task_id in known:
                continue  # a resubmitted task: the broker returns the one it holds
            prefix = f"tasks[{index}]: " if len(specs) > 1 else ""
            try:
                depth = self._check_one(
                    spec, index, specs=specs, later=later, known=known, depths=depths
                )
            except BrokerError as error:
                raise error.prefixed(prefix) from None
            if spec.task_id:
                depths[spec.task_id] = depth

    def _check_one(
        self,
        spec: TaskSpec,
        index: int,
        *,
        specs: Sequence[TaskSpec],
        later: Mapping[str, int],
        known: Mapping[str, TaskRecord],
        depths: Mapping[str, int],
    ) -> int:
        parents = spec.depends_on
        if len(parents) > self._max_dependencies:
            raise WorkflowTooLarge(
                f"task depends on {len(parents)} tasks (max_dependencies="
                f"{self._max_dependencies}); split the chord into smaller ones",
                limit="max_dependencies",
                max=self._max_dependencies,
                value=len(parents),
            )
        mode = spec.dependency_mode
        if mode in _ONE_PARENT and len(parents) != 1:
            raise InvalidArgument(
                f"dependency mode {mode.name} takes exactly one parent, got {len(parents)} "
                "(RESULTS passes the results of several)"
            )
        deepest = 0
        for parent in parents:
            if parent == spec.task_id:
                raise DependencyCycle(f"task {spec.task_id!r} depends on itself")
            position = later.get(parent)
            held = parent in known or parent in self._elsewhere
            if not held and (position is None or position >= index):
                if position is not None and _reaches(specs, later, parent, spec.task_id):
                    raise DependencyCycle(
                        f"task {spec.task_id!r} depends on {parent!r}, which depends on it"
                    )
                where = (
                    "later in the batch: submit parents before the tasks that depend on them"
                    if position is not None
                    else "unknown to the broker (never submitted, forgotten or expired)"
                )
                raise UnknownDependency(f"dependency {parent!r} is {where}", task_id=parent)
            deepest = max(deepest, depths.get(parent, self._depth.get(parent, 0)))
        if deepest + 1 > self._max_depth:
            raise WorkflowTooDeep(
                f"task would be {deepest + 1} links deep in a workflow "
                f"(max_workflow_depth={self._max_depth})",
                limit="max_workflow_depth",
                max=self._max_depth,
                value=deepest + 1,
            )
        return deepest + 1

    def accept(self, record: TaskRecord) -> None:
        """Take in a new task that depends on others (checked by :meth:`check`)."""
        self._lifecycle.accept(record, hold=True)
        self._hold(record)

    # -- recovery ----------------------------------------------------------------------------

    def restore(self, records: Iterable[TaskRecord]) -> None:
        """Rebuild the waits of restored tasks, once every record is back in the lifecycle.

        A restored finished task that held tasks wait for (a parent another broker ran) settles
        them now.
        """
        for record in records:
            if record.phase is Phase.FINISHED:
                if self.awaits(record.task_id):
                    self._finished(record)
                continue
            if record.replaced_by:
                if record.phase is Phase.WAITING:
                    self._replaced(record)
                continue
            if not record.spec.depends_on:
                continue
            if record.phase is Phase.WAITING:
                self._hold(record)
            elif record.spec.dependency_mode is not DependencyMode.IGNORE:
                record.inputs = self._inputs(record)

    # -- internals ---------------------------------------------------------------------------

    def _hold(self, record: TaskRecord) -> None:
        """Register a WAITING task with its unfinished parents; settle it if none is left."""
        tasks = self._lifecycle.tasks
        pending = 0
        depth = 0
        failed: TaskRecord | None = None
        for parent_id in record.spec.depends_on:
            parent = tasks.get(parent_id)
            if parent is None:
                if parent_id in self._elsewhere:  # unfinished on another broker
                    pending += 1
                    self._dependants.setdefault(parent_id, []).append(record)
                continue  # else gone since (an expired result): nothing left to wait for
            if parent.ready:
                if failed is None and parent.state is not TaskState.SUCCESS:
                    failed = parent
                continue
            pending += 1
            self._dependants.setdefault(parent_id, []).append(record)
            depth = max(depth, self._depth.get(parent_id, 0))
        self._waiting[record.task_id] = pending
        self._depth[record.task_id] = depth + 1
        mode = record.spec.dependency_mode
        if mode is DependencyMode.ERRBACK:
            if not pending:
                if failed is not None and _raised(failed):
                    self._complete(record, failed)
                else:
                    self._drop(record)
        elif failed is not None and mode is not DependencyMode.BARRIER:
            self._fail(record, failed)
        elif not pending:
            self._complete(record, None)

    def _replaced(self, record: TaskRecord) -> None:
        """Lifecycle hook: ``record`` replaced itself; it takes its replacement's outcome."""
        replacement = self._lifecycle.tasks.get(record.replaced_by)
        if replacement is None:
            if self.on_wait_elsewhere is None:
                self._lose(record)
            else:  # another broker may hold it: it is looked for there
                self._adopters.setdefault(record.replaced_by, []).append(record)
                self.on_wait_elsewhere(record.replaced_by)
        elif replacement.ready:
            self._adopt(record, replacement)
        else:
            self._adopters.setdefault(replacement.task_id, []).append(record)

    def replacement_lost(self, task_id: str) -> None:
        """No broker knows task ``task_id``: the tasks it was to replace fail."""
        for record in self._adopters.pop(task_id, ()):
            self._lose(record)

    def _lose(self, record: TaskRecord) -> None:
        if not record.ready:
            error = TaskError(
                "ReplacementLost", f"its replacement {record.replaced_by} is unknown to the broker"
            )
            self._lifecycle.finish(record, TaskState.FAILURE, error=error)

    def _adopt(self, record: TaskRecord, replacement: TaskRecord) -> None:
        if not record.ready:
            self._lifecycle.finish(
                record, replacement.state, result=replacement.result, error=replacement.error
            )

    def _finished(self, record: TaskRecord) -> None:
        """Lifecycle hook: ``record`` finished; settle what waited for it, breadth first."""
        self._waiting.pop(record.task_id, None)
        self._depth.pop(record.task_id, None)
        for adopter in self._adopters.pop(record.task_id, ()):
            self._adopt(adopter, record)
        children = self._dependants.pop(record.task_id, None)
        if not children:
            return
        if self._settling is not None:  # inside a settling pass: queue, don't recurse
            self._settling.append(record)
            self._pending_children[record.task_id] = children
            return
        self._settling = deque()
        try:
            self._settle_children(record, children)
            while self._settling:
                parent = self._settling.popleft()
                self._settle_children(parent, self._pending_children.pop(parent.task_id))
        finally:
            self._settling = None
            self._pending_children.clear()

    def _settle_children(self, parent: TaskRecord, children: list[TaskRecord]) -> None:
        for child in children:
            if not child.ready:
                self._settle(child, parent)

    def _settle(self, child: TaskRecord, parent: TaskRecord) -> None:
        """``parent`` of the waiting ``child`` finished: release, fail, drop or keep waiting."""
        mode = child.spec.dependency_mode
        if mode is DependencyMode.ERRBACK:
            if _raised(parent):
                self._complete(child, parent)
            else:
                self._drop(child)
            return
        if mode is not DependencyMode.BARRIER and parent.state is not TaskState.SUCCESS:
            self._fail(child, parent)
            return
        remaining = self._waiting.get(child.task_id, 0) - 1
        if remaining > 0:
            self._waiting[child.task_id] = remaining
            return
        self._complete(child, None)

    def _complete(self, child: TaskRecord, failed_parent: TaskRecord | None) -> None:
        """Every parent is done (or, for an errback, the one failed): run or finish ``child``."""
        self._waiting.pop(child.task_id, None)
        mode = child.spec.dependency_mode
        lifecycle = self._lifecycle
        if mode is DependencyMode.BARRIER:
            lifecycle.finish(child, TaskState.SUCCESS)
            return
        if mode is DependencyMode.ERRBACK and failed_parent is not None:
            child.inputs = (_outcome(failed_parent),)
        elif mode is not DependencyMode.IGNORE:
            child.inputs = self._inputs(child)
        lifecycle.release(child)

    def _inputs(self, record: TaskRecord) -> tuple[ParentOutcome, ...]:
        """The outcomes of ``record``'s parents, in order (a parent gone reads as no result)."""
        tasks = self._lifecycle.tasks
        if record.spec.dependency_mode is DependencyMode.ERRBACK:
            parent = tasks.get(record.spec.depends_on[0])
            return () if parent is None else (_outcome(parent),)
        outcomes = []
        for parent_id in record.spec.depends_on:
            parent = tasks.get(parent_id)
            if parent is None:
                outcomes.append(ParentOutcome(parent_id, ""))
            else:
                outcomes.append(ParentOutcome(parent_id, parent.spec.name, parent.result))
        return tuple(outcomes)

    def _fail(self, child: TaskRecord, parent: TaskRecord) -> None:
        """A parent of ``child`` failed or was revoked: ``child`` never runs."""
        self._waiting.pop(child.task_id, None)
        cause = parent.error or TaskError("TaskRevoked", parent.state.value)
        if len(child.spec.depends_on) > 1 or child.spec.dependency_mode is DependencyMode.RESULTS:
            # A chord body: its own failure, so its errbacks run (Celery's ChordError).
            error = TaskError(
                _CHORD_ERROR,
                f"Dependency {parent.task_id} raised {cause.type.rpartition('.')[2]}"
                f"({cause.message!r})",
                retryable=False,
            )
            self._lifecycle.finish(child, TaskState.FAILURE, error=error)
            return
        self._lifecycle.finish(
            child, parent.state, error=cause, kind=_FINISH_KIND.get(parent.state, _FINISHED)
        )

    def _drop(self, child: TaskRecord) -> None:
        """An errback that will never run: finish it REVOKED and forget it at once."""
        self._waiting.pop(child.task_id, None)
        error = TaskError("TaskRevoked", "not needed: its parent did not fail")
        self._lifecycle.finish(child, TaskState.REVOKED, error=error, kind=EventKind.REVOKED)
        self._lifecycle.forget(child.task_id)


_CHORD_ERROR = "ChordError"
_FINISHED = EventKind.FINISHED
_FINISH_KIND = {TaskState.REVOKED: EventKind.REVOKED}


def _raised(record: TaskRecord) -> bool:
    """Whether ``record`` ended FAILURE by its own doing, so that its errbacks run.

    It raised, or it is a chord body a member failed (its ChordError is its own). A task failed
    because a parent failed never ran (no attempt) and carries the parent's error: the record
    says so itself, so the answer is the same whenever an errback arrives and after a restart.
    """
    if record.state is not TaskState.FAILURE:
        return False
    propagated = (
        record.spec.depends_on
        and record.attempts == 0
        and (record.error is None or record.error.type != _CHORD_ERROR)
    )
    return not propagated


def _outcome(parent: TaskRecord) -> ParentOutcome:
    return ParentOutcome(parent.task_id, parent.spec.name, parent.result, parent.error)


def _reaches(
    specs: Sequence[TaskSpec], positions: Mapping[str, int], start: str, target: str
) -> bool:
    """Whether ``start`` depends on ``target`` through specs of the batch."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        current = stack.pop()
        if current == target:
            return True
        if current in seen or current not in positions:
            continue
        seen.add(current)
        stack.extend(specs[positions[current]].depends_on)
    return False
