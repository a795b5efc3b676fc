"""Reused task threads: reuse, interrupts landing only in the work they are for, retirement."""

from __future__ import annotations

import queue
import threading

from worker.task_threads import TaskThreads


class Stopped(Exception):
    """Raised into a thread by the tests."""


def test_finished_threads_take_the_next_work() -> None:
    threads = TaskThreads(keep_idle=1)
    # Thread objects, not idents: the OS reuses the ident of a thread that ended.
    ran_in: queue.SimpleQueue[threading.Thread] = queue.SimpleQueue()
    used: set[threading.Thread] = set()
    try:
        for _ in range(50):
            threads.run(lambda: ran_in.put(threading.current_thread()))
            used.add(ran_in.get(timeout=5))
    finally:
        threads.close()
    # A thread parks itself just after its work returns, so the next job may now and then find
    # none idle and start one; a thread per job would use 50.
    assert len(used) < 25


def test_an_interrupted_thread_ends_and_is_not_reused() -> None:
    threads = TaskThreads(keep_idle=2)
    started, release = threading.Event(), threading.Event()
    caught: queue.SimpleQueue[str] = queue.SimpleQueue()

    def spins() -> None:
        started.set()
        try:
            while not release.wait(0.01):  # Python code between waits, where the raise lands
                pass
            caught.put("not interrupted")
        except Stopped:
            caught.put("stopped")

    try:
        thread = threads.run(spins)
        assert started.wait(5)
        assert not thread.interrupt(release.set, Stopped)  # not the work it runs
        assert thread.interrupt(spins, Stopped)
        assert caught.get(timeout=5) == "stopped"
        thread.join(5)
        assert not thread.is_alive()
        assert not thread.interrupt(spins, Stopped)
        done = threading.Event()
        assert threads.run(done.set) is not thread
        assert done.wait(5)
    finally:
        release.set()
        threads.close()
