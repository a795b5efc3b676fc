"""Run a real broker inside a test: ``with running_broker() as broker: ... broker.address``.

The broker runs on 127.0.0.1, on a free port, in a background thread with its own event loop,
so synchronous tests and other event loops can talk to it over a real gRPC channel.

These brokers are memory-only unless told otherwise (``memory_only=False``, with a
``data_dir`` in the config): tests running side by side must not share, or lock, the
``./celeriac-data`` a production broker would use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from broker.config import BrokerConfig
from broker.core.broker import Broker
from broker.journal.store import Store
from broker.service.server import BrokerServer

T = TypeVar("T")

_START_TIMEOUT = 10.0


class RunningBroker:
    """A broker serving in a background thread.

    Args:
        config: Limits, timings and (with ``memory_only=False``) the data dir.
        memory_only: Keep no journal (the default for tests).
        store: The journal's store when not memory-only (SQLite in the data dir by default).

    Attributes:
        address: "127.0.0.1:PORT", ready to pass to a client or worker.
    """

    def __init__(
        self, config: BrokerConfig, *, memory_only: bool = True, store: Store | None = None
    ) -> None:
        self.address = ""
        if memory_only:
            config = config.replace(memory_only=True)
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._server = BrokerServer(config, store=store)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopped = False

    def start(self) -> None:
        """Start the loop thread and the server; returns once the port is bound."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._server.start(), self._loop)
        self.address = future.result(_START_TIMEOUT)

    def call(self, function: Callable[[Broker], T]) -> T:
        """Run ``function(core)`` on the broker's loop (the only safe way to inspect it)."""
        runtime = self._server.runtime
        assert runtime is not None, "the broker is not running"

        async def run() -> T:
            return function(runtime.broker)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(_START_TIMEOUT)

    def stream_count(self) -> int:
        """Worker Session streams the broker is still serving (0 once every worker is gone)."""
        runtime = self._server.runtime
        assert runtime is not None, "the broker is not running"

        async def count() -> int:
            return runtime.stream_count

        return asyncio.run_coroutine_threadsafe(count(), self._loop).result(_START_TIMEOUT)

    async def _stop(self, grace: float) -> None:
        await self._server.stop(grace)
        # Like asyncio.run, end what is left on the loop (gRPC's own tasks for calls cut short)
        # before the loop closes, so nothing is destroyed while pending.
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    def stop(self, grace: float = 0.0) -> None:
        """Shut down gracefully (drain workers, end calls within ``grace`` s); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        future = asyncio.run_coroutine_threadsafe(self._stop(grace), self._loop)
        try:
            future.result(grace + _START_TIMEOUT)
        except concurrent.futures.TimeoutError:
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_START_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()


@contextmanager
def running_broker(
    config: BrokerConfig | None = None, *, memory_only: bool = True, store: Store | None = None
) -> Iterator[RunningBroker]:
    """Start an in-process broker on 127.0.0.1, port 0; stop it on exit.

    Args:
        config: Limits and timings; host and port are always 127.0.0.1 and a free port.
        memory_only: Keep no journal (the default: see the module docstring).
        store: The journal's store when not memory-only.

    Yields:
        The running broker; ``.address`` is where to connect.
    """
    base = config or BrokerConfig()
    broker = RunningBroker(
        base.replace(host="127.0.0.1", port=0), memory_only=memory_only, store=store
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
