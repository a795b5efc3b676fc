"""The publish signals: ``before_task_publish`` and ``after_task_publish`` around each send.

Celery's receivers of ``before_task_publish`` add headers to the message (that is how tracing
libraries carry trace context to the worker), so here the ``headers`` dict a receiver gets holds
``id``, ``task`` and the call's headers, and whatever string keys it adds or changes travel with
the task as its headers (``self.request.headers`` in the worker). With no receiver connected a
send pays one list check per signal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from client import signals
from client.errors import InvalidTaskSpec
from client.records import SubmitSpec

# Keys Celery's headers carry that describe the task rather than travel with it.
_OWN_KEYS = frozenset({"id", "task"})


def before_publish(
    spec: SubmitSpec, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> SubmitSpec:
    """Send ``before_task_publish`` for ``spec``; returns it with the headers receivers set."""
    if not signals.before_task_publish.receivers:
        return spec
    options = spec.options
    headers: dict[str, Any] = {"id": spec.task_id, "task": options.name, **options.headers}
    signals.before_task_publish.send(
        sender=options.name,
        body=(tuple(args or ()), dict(kwargs or {}), {}),
        exchange="",
        routing_key=options.queue,
        headers=headers,
        properties={},
        declare=[],
        retry_policy=None,
    )
    carried = {key: value for key, value in headers.items() if key not in _OWN_KEYS}
    if carried == dict(options.headers):
        return spec
    for key, value in carried.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTaskSpec(
                f"a before_task_publish receiver set header {key!r} to a "
                f"{type(value).__name__}; headers map str to str"
            )
    return dataclasses.replace(spec, options=dataclasses.replace(options, headers=carried))


def after_publish(
    spec: SubmitSpec, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> None:
    """Send ``after_task_publish`` for ``spec``, which the broker accepted."""
    if signals.after_task_publish.receivers:
        signals.after_task_publish.send(
            sender=spec.options.name,
            body=(tuple(args or ()), dict(kwargs or {}), {}),
            exchange="",
            routing_key=spec.options.queue,
        )
