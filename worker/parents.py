"""What a dependent task receives from the tasks it waited for (chain, chord, link_error).

The broker hands the parents' outcomes over undecoded (``Assignment.parent_results``); the
worker decodes them with the task's own content-type policy and puts them in front of the
task's arguments, as Celery does:

- ``result`` (a chain link, a ``link=`` callback): the parent's return value;
- ``results`` (a chord body): the list of the members' return values, in member order;
- ``errback`` (``link_error=``): Celery 5's two forms. A function that takes more than one
  argument (besides the errback signature's own) is called with ``(request, exc, traceback)``:
  the failed task's request (``id``, ``name``), its error rebuilt as an exception, and the
  remote traceback text. Any other gets the failed task's id, Celery's older form. Unlike
  Celery, both run as tasks on a worker (Celery runs the new form inside the failing worker),
  so an errback survives that worker.
- ``ignore`` (``.si()``): nothing.

A parent that stored no result (``ignore_result``) passes None.
"""

from __future__ import annotations

import inspect

from client import serialization
from client.context import Request
from client.failures import rebuild_exception
from client.records import RemoteError
from client.task import Task
from worker.jobs import Job, ParentResult


def with_parents(job: Job, task: Task, args: list[object], allow_pickle: bool) -> list[object]:
    """``args`` with what ``job``'s parents pass in front.

    Raises:
        SerializationError: A parent's result does not decode.
        ContentTypeRefused: A parent's result is pickled and pickle is not allowed.
    """
    mode = job.dependency_mode
    if mode == "result":
        return [_value(job.parents[0], allow_pickle) if job.parents else None, *args]
    if mode == "results":
        return [[_value(parent, allow_pickle) for parent in job.parents], *args]
    if mode == "errback" and job.parents:
        return [*_errback_arguments(job.parents[0], task, len(args)), *args]
    return args


def _value(parent: ParentResult, allow_pickle: bool) -> object:
    if parent.result is None:
        return None
    return serialization.decode(
        parent.result.body, parent.result.content_type, allow_pickle=allow_pickle
    )


def _errback_arguments(parent: ParentResult, task: Task, own: int) -> list[object]:
    if not _takes_several(task, own):
        return [parent.task_id]
    error = parent.error
    remote = RemoteError(
        error.type if error else "TaskError",
        error.message if error else "",
        error.traceback if error else "",
    )
    request = Request(id=parent.task_id, name=parent.name)
    return [request, rebuild_exception(remote), remote.traceback]


def _takes_several(task: Task, own: int) -> bool:
    """Whether the function takes more than one positional argument besides its ``own``.

    Celery's test counts every parameter, so an old-style errback with a partial argument of
    its own (``def on_error(task_id, path)`` sent as ``on_error.s(path)``) is called the new
    way and fails; counting only the free parameters calls it the way it was written.
    """
    try:
        parameters = list(inspect.signature(task.run).parameters.values())
    except (TypeError, ValueError):
        return False
    if task.options.bind and parameters:
        parameters = parameters[1:]
    kinds = [parameter.kind for parameter in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return True
    return sum(1 for kind in kinds if kind in _POSITIONAL) - own > 1


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
