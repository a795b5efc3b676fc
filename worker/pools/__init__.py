"""Execution pools: where tasks actually run (child processes, threads, or the event loop)."""

from __future__ import annotations

from worker.pools.aio import AsyncPool
from worker.pools.base import Pool, PoolContext
from worker.pools.process import ProcessPool, stop_helper_processes
from worker.pools.threads import ThreadPool

__all__ = [
    "AsyncPool",
    "Pool",
    "PoolContext",
    "ProcessPool",
    "ThreadPool",
    "create",
    "stop_helper_processes",
]


def create(kind: str, concurrency: int, context: PoolContext) -> Pool:
    """Build the pool named by `--pool`.

    Args:
        kind: "process", "thread", "async" or "solo" ("solo" is a one-slot thread pool, so the
            event loop keeps answering the broker while a task runs).
        concurrency: Number of slots (ignored for "solo").
        context: What the pool runs jobs with.

    Returns:
        The pool, not yet started.
    """
    if kind == "process":
        return ProcessPool(concurrency, context)
    if kind == "thread":
        return ThreadPool(concurrency, context)
    if kind == "async":
        return AsyncPool(concurrency, context)
    if kind == "solo":
        return ThreadPool(1, context)
    raise ValueError(f"unknown pool {kind!r}")
