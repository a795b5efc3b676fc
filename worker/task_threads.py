"""Long-lived threads that run task bodies, reused from job to job.

Starting an OS thread per job costs more than a no-op task itself, so the thread and async
pools hand each job to an idle thread and start a new one only when none is free. A thread
cannot be killed, so stopping a job means raising an exception in its thread at its next
Python instruction (`TaskThread.interrupt`). A thread interrupted once is never trusted with
another job: the exception may still be on its way, and must not land in the next task. It
finishes what it is doing and ends, and later jobs get a fresh thread.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

Work = Callable[[], None]


class TaskThreads:
    """Daemon threads started on demand that wait for more work when they finish.

    Daemon threads, because a stopped or abandoned job may run on for a long time and must not
    hold up the worker's exit.
    """

    def __init__(self, keep_idle: int, name: str = "celeriac-task") -> None:
        """Keep up to `keep_idle` finished threads waiting for work (0: a thread per job)."""
        self.keep_idle = keep_idle
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[TaskThread] = []
        self._closed = False
        self._numbers = itertools.count(1)

    def run(self, work: Work) -> TaskThread:
        """Run `work` in an idle thread, or in a new one when none is idle.

        Returns:
            The thread running it, to interrupt the work with.
        """
        with self._lock:
            thread = self._idle.pop() if self._idle else None
        if thread is None:
            thread = TaskThread(self, f"{self._name}-{next(self._numbers)}")
            thread.begin(work)
            thread.start()
        else:
            thread.begin(work)
        return thread

    def close(self) -> None:
        """End the idle threads; busy ones end when their work returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for thread in idle:
            thread.hand(None)

    def _park(self, thread: TaskThread) -> bool:
        """Take `thread` back as idle; False when it should end instead."""
        with self._lock:
            if self._closed or len(self._idle) >= self.keep_idle:
                return False
            self._idle.append(thread)
            return True


class TaskThread(threading.Thread):
    """One thread of `TaskThreads`: runs the work handed to it, one item at a time."""

    def __init__(self, owner: TaskThreads, name: str) -> None:
        """Create the thread (not started) for `owner`."""
        super().__init__(name=name, daemon=True)
        self._owner = owner
        self._inbox: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        # Guards `_current` and `_retired`, so an interrupt only ever lands in the work it is for.
        self._state = threading.Lock()
        self._current: Work | None = None
        self._retired = False

    def begin(self, work: Work) -> None:
        """Make `work` this thread's current work and hand it over."""
        with self._state:
            self._current = work
        self.hand(work)

    def hand(self, work: Work | None) -> None:
        """Put `work` in the inbox (None: end the thread)."""
        self._inbox.put(work)

    def interrupt(self, work: Work, exc_type: type[BaseException]) -> bool:
        """Raise `exc_type` in this thread if it still runs (or is about to run) `work`.

        The thread ends once the work returns.

        Returns:
            False when the work has already returned (nothing is raised).
        """
        with self._state:
            if self._current is not work or self.ident is None:
                return False
            self._retired = True
            _set_async_exc(self.ident, exc_type)
            return True

    def run(self) -> None:
        """Run work from the inbox until told to end, interrupted, or not needed any more."""
        try:
            while (work := self._inbox.get()) is not None:
                work()
                with self._state:
                    self._current = None
                    if self._retired:
                        # An interrupt raised too late to land in the work is still pending.
                        _set_async_exc(self.ident, None)
                        return
                if not self._owner._park(self):
                    return
        except BaseException:
            # Work items catch their own errors; anything here was raised into the thread.
            with self._state:
                interrupted = self._retired
            if not interrupted:
                logger.exception("task thread %s failed", self.name)


def _set_async_exc(ident: int | None, exc_type: type[BaseException] | None) -> None:
    """Raise `exc_type` in thread `ident` at its next Python instruction (None: clear it)."""
    if ident is None:
        return
    exc = None if exc_type is None else ctypes.py_object(exc_type)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), exc)
