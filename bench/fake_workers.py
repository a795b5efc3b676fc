"""Lightweight workers speaking the raw `WorkerService.Session` stream, many per process.

A hundred real worker processes would swamp a 2-core machine, so the scaling scenario connects
this many sessions from one asyncio process instead: each says Hello, grants its credits,
answers every assignment at once (started + SUCCESS in one Report, returning the credit) and
answers pings. `bench.noop` returns null and `bench.add` the sum of its arguments; anything else
returns null too. Each session has its own HTTP/2 connection, like separate worker processes.

    python -m bench.fake_workers --broker 127.0.0.1:PORT --count 100 --concurrency 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator

import grpc

from celeriac.v1 import tasks_pb2, worker_pb2, worker_pb2_grpc

JSON = "application/json"
# Without a local pool, channels to one target share a connection; workers each have their own.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def execute(assignment: worker_pb2.Assignment) -> worker_pb2.Outcome:
    """The outcome of running the assignment's task body, without a pool."""
    value = None
    if assignment.name == "bench.add":
        args, _kwargs = json.loads(assignment.args.body)
        value = sum(args)
    return worker_pb2.Outcome(
        lease_id=assignment.lease_id,
        state=tasks_pb2.TASK_STATE_SUCCESS,
        result=tasks_pb2.Payload(content_type=JSON, body=json.dumps(value).encode()),
    )


def answer(message: worker_pb2.BrokerMessage, slots: int) -> worker_pb2.WorkerMessage | None:
    """The reply to one broker message, or None when it needs none."""
    kind = message.WhichOneof("kind")
    if kind == "welcome":
        return worker_pb2.WorkerMessage(report=worker_pb2.Report(credit=slots))
    if kind == "assignments":
        tasks = message.assignments.tasks
        report = worker_pb2.Report(
            credit=len(tasks),
            started_lease_ids=[task.lease_id for task in tasks],
            outcomes=[execute(task) for task in tasks],
        )
        return worker_pb2.WorkerMessage(report=report)
    if kind == "ping":
        return worker_pb2.WorkerMessage(pong=worker_pb2.Pong(nonce=message.ping.nonce))
    return None


class FakeWorker:
    """One session: a Hello, then one reply per broker message that needs one."""

    def __init__(self, address: str, index: int, slots: int, welcomed: asyncio.Queue[int]) -> None:
        self.address = address
        self.index = index
        self.slots = slots
        self.welcomed = welcomed
        self.outbox: asyncio.Queue[worker_pb2.WorkerMessage | None] = asyncio.Queue()

    def hello(self) -> worker_pb2.WorkerMessage:
        hostname = socket.gethostname()
        return worker_pb2.WorkerMessage(
            hello=worker_pb2.Hello(
                worker_id=f"fake-{self.index}@{hostname}:{os.getpid()}",
                hostname=hostname,
                pid=os.getpid(),
                queues=["default"],
                task_names=["bench.noop", "bench.add"],
                concurrency=self.slots,
                pool="fake",
                version="bench",
            )
        )

    async def requests(self) -> AsyncIterator[worker_pb2.WorkerMessage]:
        yield self.hello()
        while (message := await self.outbox.get()) is not None:
            yield message

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS) as channel:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            call = stub.Session(self.requests())
            async for message in call:
                if message.WhichOneof("kind") == "welcome":
                    self.welcomed.put_nowait(self.index)
                if message.WhichOneof("kind") == "drain":
                    break
                reply = answer(message, self.slots)
                if reply is not None:
                    self.outbox.put_nowait(reply)
            self.outbox.put_nowait(None)


async def serve(address: str, count: int, slots: int) -> None:
    welcomed: asyncio.Queue[int] = asyncio.Queue()
    workers = [FakeWorker(address, index, slots, welcomed) for index in range(count)]
    sessions = [asyncio.create_task(worker.run()) for worker in workers]
    for _ in range(count):
        await welcomed.get()
    print(f"fake workers ready count={count}", flush=True)
    await asyncio.gather(*sessions)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_workers", description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(serve(args.broker, args.count, args.concurrency))


if __name__ == "__main__":
    main()
