"""Calls into the broker's event loop from other threads (the HTTP port's request threads).

The core belongs to the loop and takes no locks, so a thread never reads it directly: it hands
the loop a function and waits for the answer, bounded, so a stuck loop gives an error instead
of a hung thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# How long a thread waits for the loop's answer.
LOOP_CALL_TIMEOUT = 5.0


class LoopUnavailable(RuntimeError):
    """The broker's loop did not answer in time, or is closed."""


def call_on_loop(
    loop: asyncio.AbstractEventLoop, function: Callable[[], T], timeout: float = LOOP_CALL_TIMEOUT
) -> T:
    """Run ``function`` on ``loop`` and return what it returned (call from another thread).

    Raises:
        LoopUnavailable: The loop is closed or did not answer within ``timeout``.
        Exception: Whatever ``function`` raised.
    """

    async def run() -> T:
        return function()

    return wait_on_loop(loop, run(), timeout)


def wait_on_loop(
    loop: asyncio.AbstractEventLoop,
    coroutine: Coroutine[Any, Any, T],
    timeout: float = LOOP_CALL_TIMEOUT,
) -> T:
    """Run ``coroutine`` on ``loop`` and wait for its result (call from another thread).

    Raises:
        LoopUnavailable: The loop is closed or did not answer within ``timeout``.
        Exception: Whatever the coroutine raised.
    """
    try:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    except RuntimeError as error:  # the loop is closed
        coroutine.close()
        raise LoopUnavailable("the broker's loop is closed") from error
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise LoopUnavailable(f"the broker's loop did not answer within {timeout:g} s") from None
