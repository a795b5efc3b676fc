"""The round trip's transport floor: Celeriac's message path with no Celeriac code in it.

`python -m bench.transport_floor [--child] [--trips N]`

Three processes trade opaque bytes over grpcio the way a round trip does: the client sends a
submit on a bidi stream; a relay (the broker's place) forwards it to the worker's stream and
acks it to the client; the worker (with ``--child``, through a pipe round trip to a child process,
as the process pool does) sends it back; the relay pushes it to the client, which has waited for
the ack and then the push. Same threads as the real client: gRPC's request thread and a reader
thread that hands replies to the caller. Nothing is decoded, stored or looked up.

So the difference between this p50 and ``make bench``'s round trip is what Celeriac's own code
costs on the critical path. Set ``GRPC_EXPERIMENTS`` to compare gRPC's socket layers (see
broker/grpc_stack.py; the relay and worker here take whatever the environment says).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import grpc
import grpc.aio

from bench.stats import percentile

SERVICE = "floor.Floor"
WARMUP = 300
ACK = b"A"
PUSH = b"P"


def _same(data: bytes) -> bytes:
    return data


def _relay(port: Synchronized[int], ready: Event) -> None:
    """The broker's place: a submit goes to the worker, then an ack to the client."""

    async def main() -> None:
        to_worker: asyncio.Queue[bytes] = asyncio.Queue()
        to_client: asyncio.Queue[bytes] = asyncio.Queue()

        def submitted(message: bytes) -> None:
            # The assignment first. (The broker writes the ack first; the other order measured
            # the same there, 12 alternating pairs.)
            to_worker.put_nowait(message)
            to_client.put_nowait(ACK)

        def reported(message: bytes) -> None:
            to_client.put_nowait(PUSH)

        async def forward(requests: AsyncIterator[bytes], deliver: Callable[[bytes], None]) -> None:
            async for message in requests:
                deliver(message)

        async def serve(
            requests: AsyncIterator[bytes],
            context: grpc.aio.ServicerContext[bytes, bytes],
            deliver: Callable[[bytes], None],
            outbound: asyncio.Queue[bytes],
        ) -> None:
            reader = asyncio.ensure_future(forward(requests, deliver))
            try:
                while True:
                    await context.write(await outbound.get())
            finally:
                reader.cancel()

        async def worker_stream(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> None:
            await serve(requests, context, reported, to_worker)

        async def client_stream(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> None:
            await serve(requests, context, submitted, to_client)

        server = grpc.aio.server()
        handlers = {
            "Worker": grpc.stream_stream_rpc_method_handler(worker_stream, _same, _same),
            "Client": grpc.stream_stream_rpc_method_handler(client_stream, _same, _same),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def _child(jobs: Connection, outcomes: Connection) -> None:
    with contextlib.suppress(EOFError):  # the worker went away
        while True:
            outcomes.send(jobs.recv())


def _worker(address: str, ready: Event, with_child: bool) -> None:
    """The worker's place: every assignment goes back as a report (via a child if asked)."""

    async def main() -> None:
        reports: asyncio.Queue[bytes] = asyncio.Queue()

        async def outgoing() -> AsyncIterator[bytes]:
            while True:
                yield await reports.get()

        jobs_out: Connection | None = None
        if with_child:
            context = multiprocessing.get_context("spawn")
            jobs_in, jobs_out = context.Pipe(duplex=False)
            outcomes_in, outcomes_out = context.Pipe(duplex=False)
            context.Process(target=_child, args=(jobs_in, outcomes_out), daemon=True).start()
            asyncio.get_running_loop().add_reader(
                outcomes_in.fileno(), lambda: reports.put_nowait(outcomes_in.recv())
            )
        channel = grpc.aio.insecure_channel(address)
        call = channel.stream_stream(
            f"/{SERVICE}/Worker", request_serializer=_same, response_deserializer=_same
        )(outgoing())
        ready.set()
        async for assignment in call:
            if jobs_out is not None:
                jobs_out.send(assignment)
            else:
                reports.put_nowait(assignment)

    asyncio.run(main())


def _round_trips(address: str, trips: int) -> list[float]:
    """Seconds per trip: send, wait for the ack, wait for the push."""
    channel = grpc.insecure_channel(address)
    requests: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def outgoing() -> Iterator[bytes]:
        while True:
            yield requests.get()

    replies = channel.stream_stream(
        f"/{SERVICE}/Client", request_serializer=_same, response_deserializer=_same
    )(outgoing())
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def read() -> None:
        # The stream breaks when the script stops the relay: not worth a traceback.
        with contextlib.suppress(grpc.RpcError, ValueError):
            for reply in replies:
                inbox.put(reply)

    threading.Thread(target=read, daemon=True).start()
    samples = []
    for trip in range(WARMUP + trips):
        started = time.perf_counter()
        requests.put(b"x" * 100)
        if inbox.get() != ACK or inbox.get() != PUSH:
            raise AssertionError("replies out of order")
        if trip >= WARMUP:
            samples.append(time.perf_counter() - started)
    channel.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_floor", description=__doc__)
    parser.add_argument("--child", action="store_true", help="add the pool child's pipe trip")
    parser.add_argument("--trips", type=int, default=3000)
    args = parser.parse_args(argv)
    context = multiprocessing.get_context("spawn")
    relay_ready, worker_ready = context.Event(), context.Event()
    port = context.Value("i", 0)
    relay = context.Process(target=_relay, args=(port, relay_ready), daemon=True)
    relay.start()
    relay_ready.wait()
    address = f"127.0.0.1:{port.value}"
    # Not a daemon: a daemon process may not start the pool child.
    worker = context.Process(target=_worker, args=(address, worker_ready, args.child))
    worker.start()
    worker_ready.wait()
    try:
        samples = _round_trips(address, args.trips)
    finally:
        worker.terminate()
        relay.terminate()
        worker.join()
    layer = os.environ.get("GRPC_EXPERIMENTS", "(gRPC default)")
    p50, p99 = (1000 * percentile(samples, fraction) for fraction in (0.5, 0.99))
    print(f"child={args.child} GRPC_EXPERIMENTS={layer}: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
