"""Signals with Celery's names and arguments, for code that hooks into publishing and execution.

::

    from client.signals import task_failure

    @task_failure.connect
    def report(sender=None, task_id=None, exception=None, **kwargs):
        ...

A receiver takes keyword arguments (always accept ``**kwargs``: a later release may send more)
and may be limited to one sender: ``@task_prerun.connect(sender=add)`` (a task, or for the
publish signals a task name). Receivers run in the process where the event happens: publish
signals in the producer, task signals in the process that runs the task (a pool child with the
process pool), ``worker_process_init`` in each pool child as it starts. A receiver that raises
is logged and the others still run; the task or the send goes on.

Receivers are held by strong references, unlike Celery's default ``weak=True``: a receiver
defined inside a function stays connected until ``disconnect``.

Sent where Celery sends them, with the same arguments:

- ``before_task_publish(sender=name, body=(args, kwargs, {}), exchange="", routing_key=queue,
  headers, properties, declare, retry_policy)``: ``headers`` holds ``id`` and ``task`` and the
  call's headers; keys a receiver adds (trace context, say) travel with the task.
- ``after_task_publish(sender=name, body, exchange, routing_key)``: the broker accepted it.
- ``task_prerun(sender=task, task_id, task, args, kwargs)``
- ``task_postrun(sender=task, task_id, task, args, kwargs, retval, state)``
- ``task_success(sender=task, result)``
- ``task_failure(sender=task, task_id, exception, args, kwargs, traceback, einfo)``
- ``task_retry(sender=task, request, reason, einfo)``
- ``task_revoked(sender=task, request, terminated, signum, expired)``: sent by the worker process
  (not a pool child) when the broker cancels a task the worker holds, whether it was running
  (``terminated`` says whether it was killed; ``signum`` is the signal the process pool sent its
  child, None for the thread and async pools) or waiting in its buffer; and, with
  ``expired=True``, by the process that was about to run a task whose ``expires`` passed. A
  task revoked while still queued at the broker never reaches a worker, so no worker sends it.
- ``worker_process_init(sender=None)``, ``worker_ready(sender=worker)``,
  ``worker_shutdown(sender=worker)``
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]
R = TypeVar("R", bound=Receiver)


class Signal:
    """A named event that receivers connect to.

    Attributes:
        name: The signal's name (Celery's).
        receivers: (receiver, sender filter) pairs; empty means sending costs one check.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: list[tuple[Receiver, object]] = []

    def __repr__(self) -> str:
        return f"<Signal {self.name}>"

    @overload
    def connect(self, receiver: R, /, *, sender: object = None, **_celery: object) -> R: ...

    @overload
    def connect(
        self, receiver: None = None, /, *, sender: object = None, **_celery: object
    ) -> Callable[[R], R]: ...

    def connect(
        self, receiver: R | None = None, /, *, sender: object = None, **_celery: object
    ) -> R | Callable[[R], R]:
        """Connect ``receiver`` (also usable as ``@signal.connect`` or ``@signal.connect(...)``).

        Args:
            receiver: The callable; omitted when used as a decorator with arguments.
            sender: Only events from this sender reach the receiver (None: all).
            **_celery: Celery's ``weak`` and ``dispatch_uid``, accepted and not needed here.

        Returns:
            The receiver (so the decorator leaves the function usable).
        """

        def attach(function: R) -> R:
            if (function, sender) not in self.receivers:
                self.receivers.append((function, sender))
            return function

        return attach(receiver) if receiver is not None else attach

    def disconnect(self, receiver: Receiver, sender: object = None) -> bool:
        """Disconnect ``receiver`` (for ``sender``); True if it was connected."""
        if (receiver, sender) in self.receivers:
            self.receivers.remove((receiver, sender))
            return True
        return False

    def send(self, sender: object, **arguments: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver whose sender filter matches; returns what each returned.

        A receiver that raises is logged, and its entry holds the exception.
        """
        answers: list[tuple[Receiver, Any]] = []
        for receiver, wanted in list(self.receivers):
            if wanted is not None and wanted != sender and wanted is not sender:
                continue
            try:
                answers.append((receiver, receiver(signal=self, sender=sender, **arguments)))
            except Exception as exc:  # a user's receiver must not break the task or the send
                logger.exception("receiver %r of signal %s failed", receiver, self.name)
                answers.append((receiver, exc))
        return answers


before_task_publish = Signal("before_task_publish")
after_task_publish = Signal("after_task_publish")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")


_TASK_SIGNALS = (task_prerun, task_postrun, task_success, task_failure, task_retry)


def any_task_receivers() -> bool:
    """Whether any task signal has a receiver (the worker skips all of them when none has)."""
    return any(signal.receivers for signal in _TASK_SIGNALS)
