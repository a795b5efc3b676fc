"""From a canvas (chain, group, chord, callbacks) to specs that name what they wait for.

Every task of a workflow gets its id here, before anything is sent, so a task can name its
parents: a chain link depends on the link before (``result``: it receives that result), a
chord body on the header's members (``results``: the list of theirs), an immutable signature
receives nothing (``ignore``), a ``link_error`` callback runs only if its task fails
(``errback``). The specs go to the broker parents first, in order, in as few ``SubmitMany``
calls as its batch limit allows, one after another (a later batch may name ids of an earlier
one). Each batch is accepted all or nothing; when one is refused after others were accepted,
the accepted tasks run as far as their parents allow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from client.canvas import Canvas, Signature, chain, chord, group
from client.errors import InvalidTaskSpec
from client.publishing import after_publish, before_publish
from client.records import SubmitSpec
from client.result import AsyncResult, GroupResult

if TYPE_CHECKING:
    from client.app import Celeriac

# Options a canvas passes down to every task in it; ``link`` is the canvas's own.
_INHERITED_EXCLUDED = frozenset({"link", "task_id"})


@dataclass(frozen=True)
class _After:
    """What a step waits for: its parents' ids, and whether it receives them as a list."""

    parents: tuple[str, ...] = ()
    joined: bool = False


@dataclass
class _Step:
    """A compiled part of a workflow: its result handle, and what a step after it waits for."""

    result: AsyncResult | GroupResult
    then: _After


@dataclass
class _Plan:
    app: Celeriac
    specs: list[SubmitSpec] = field(default_factory=list)
    calls: list[tuple[Sequence[Any], Mapping[str, Any]]] = field(default_factory=list)

    def add(
        self, sig: Signature, options: Mapping[str, Any], parents: tuple[str, ...], mode: str
    ) -> str:
        spec = self.app.build_spec(sig.name, sig.args, sig.kwargs, options)
        spec = before_publish(spec, sig.args, sig.kwargs)
        if parents or mode:
            spec = dataclasses.replace(spec, depends_on=parents, dependency_mode=mode)
        self.specs.append(spec)
        self.calls.append((sig.args, sig.kwargs))
        return spec.task_id


@overload
def send(app: Celeriac, canvas: Canvas) -> AsyncResult | GroupResult: ...


@overload
def send(app: Celeriac, canvas: Canvas, *, one_result: str) -> AsyncResult: ...


def send(app: Celeriac, canvas: Canvas, *, one_result: str = "") -> AsyncResult | GroupResult:
    """Submit every task of ``canvas``; returns the handle a Celery user gets for it.

    Args:
        app: The app that sends.
        canvas: The workflow.
        one_result: What needs one result from it (e.g. "Task.replace"): a canvas that ends
            in a group is then refused before anything is sent.

    Raises:
        InvalidTaskSpec: ``one_result`` is given and the canvas ends in a group.
    """
    plan = _Plan(app)
    step = _compile(plan, canvas, _After(), {})
    if one_result and isinstance(step.result, GroupResult):
        raise InvalidTaskSpec(
            f"{one_result} needs a workflow with one result; this one ends in a group "
            "(end it with a task gathering the group's results, as a chord's body does)"
        )
    _submit(app, plan.specs)
    for spec, (args, kwargs) in zip(plan.specs, plan.calls, strict=True):
        after_publish(spec, args, kwargs)
    return step.result


def barrier(app: Celeriac, group_id: str, task_ids: Sequence[str]) -> None:
    """Record a group at the broker: a task that never runs, finished once its members are."""
    spec = app.build_spec("celeriac.group", (), {}, {"task_id": group_id})
    spec = dataclasses.replace(spec, depends_on=tuple(task_ids), dependency_mode="barrier")
    _submit(app, [spec])


def _submit(app: Celeriac, specs: list[SubmitSpec]) -> None:
    transport = app.transport
    if len(specs) == 1:
        transport.submit(specs)
        return
    # One batch at a time: a later batch names ids the broker must already hold.
    transport.submit_chunks(app._chunks(specs, transport.server_info()), in_flight=1)


def _compile(plan: _Plan, canvas: Canvas, after: _After, inherited: Mapping[str, Any]) -> _Step:
    if isinstance(canvas, Signature):
        return _signature(plan, canvas, after, inherited)
    if isinstance(canvas, chain):
        return _chain(plan, canvas, after, inherited)
    if isinstance(canvas, group):
        return _group(plan, canvas, after, inherited)
    return _chord(plan, canvas, after, inherited)


def _signature(plan: _Plan, sig: Signature, after: _After, inherited: Mapping[str, Any]) -> _Step:
    options = {**inherited, **sig.options}
    links = _callbacks(options.pop("link", None))
    errbacks = _callbacks(options.pop("link_error", None))
    if after.parents:
        mode = "ignore" if sig.immutable else ("results" if after.joined else "result")
    else:
        mode = ""
        if after.joined and not sig.immutable:  # a chord with an empty header: its body gets []
            sig = sig.clone(([],))
    task_id = plan.add(sig, options, after.parents, mode)
    step = _Step(AsyncResult(task_id, app=plan.app), _After((task_id,)))
    _attach_callbacks(plan, step.then, links, errbacks)
    return step


def _attach_callbacks(
    plan: _Plan, after: _After, links: list[Canvas], errbacks: list[Canvas]
) -> None:
    for link in links:
        _compile(plan, link, after, {})
    for errback in errbacks:
        if not isinstance(errback, Signature):
            raise InvalidTaskSpec(f"link_error takes signatures, got {type(errback).__name__}")
        options = {k: v for k, v in errback.options.items() if k not in ("link", "link_error")}
        for parent in after.parents:
            plan.add(errback, options, (parent,), "errback")


def _chain(plan: _Plan, canvas: chain, after: _After, inherited: Mapping[str, Any]) -> _Step:
    options = {**inherited, **canvas.options}
    links = _callbacks(options.pop("link", None))
    step: _Step | None = None
    previous: AsyncResult | GroupResult | None = None
    for task in canvas.tasks:
        step = _compile(plan, task, after, _passed_down(options))
        _set_parent(step.result, previous)
        previous, after = step.result, step.then
    assert step is not None
    _attach_callbacks(plan, step.then, links, [])
    return step


def _group(plan: _Plan, canvas: group, after: _After, inherited: Mapping[str, Any]) -> _Step:
    options = {**inherited, **canvas.options}
    links = _callbacks(options.pop("link", None))
    results: list[AsyncResult] = []
    terminals: list[str] = []
    for task in canvas.tasks:
        step = _compile(plan, task, after, _passed_down(options))
        if isinstance(step.result, GroupResult):
            results.extend(step.result.results)
        else:
            results.append(step.result)
        terminals.extend(step.then.parents)
    then = _After(tuple(terminals), joined=True)
    _attach_callbacks(plan, then, links, [])
    return _Step(GroupResult(None, results, plan.app), then)


def _chord(plan: _Plan, canvas: chord, after: _After, inherited: Mapping[str, Any]) -> _Step:
    if canvas.body is None:
        raise InvalidTaskSpec("a chord needs a body: chord(header)(body) or chord(h, body)")
    options = {**inherited, **canvas.options}
    # The errbacks go to the body only, as with Celery's default
    # (task_allow_error_cb_on_chord_header off): a failed member fails the body, which calls them.
    to_header = {k: v for k, v in _passed_down(options).items() if k != "link_error"}
    header = _group(plan, canvas.header, after, to_header)
    body = _compile(plan, canvas.body, header.then, options)
    _set_parent(body.result, header.result)
    return body


def _passed_down(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in _INHERITED_EXCLUDED}


def _callbacks(value: object) -> list[Canvas]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]  # type: ignore[list-item]


def _set_parent(
    result: AsyncResult | GroupResult, parent: AsyncResult | GroupResult | None
) -> None:
    if parent is None:
        return
    if isinstance(result, GroupResult):
        for member in result.results:
            if member.parent is None:
                member.parent = parent
        result.parent = parent
    else:
        result.parent = parent
