"""A minimal worker speaking the session stream, so client tests can get real results.

It is not the real worker (that package is tested on its own): it takes assignments from one
queue and answers each with what ``handle(name, args, kwargs)`` returns or raises, so the client
sees SUCCESS and FAILURE records produced by a real broker.
"""

from __future__ import annotations

import queue
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import grpc

from celeriac.v1 import tasks_pb2, worker_pb2, worker_pb2_grpc
from client.serialization import JSON, decode_args, encode

Handler = Callable[[str, list[Any], dict[str, Any]], Any]
_END = object()


class StubWorker:
    """Runs ``handle`` for every task of ``queue_name`` in a background thread."""

    def __init__(self, address: str, handle: Handler, queue_name: str = "default") -> None:
        self._handle = handle
        self._outgoing: queue.Queue[object] = queue.Queue()
        self._channel = grpc.insecure_channel(address)
        self._stub = worker_pb2_grpc.WorkerServiceStub(self._channel)
        # Unique: a second session with a live worker's id fences the first one off.
        worker_id = f"stub-worker-{uuid.uuid4().hex[:8]}"
        hello = worker_pb2.Hello(
            worker_id=worker_id, hostname="test", pid=1, queues=[queue_name],
            concurrency=4, pool="stub", version="0",
        )  # fmt: skip
        self._outgoing.put(worker_pb2.WorkerMessage(hello=hello))
        self._outgoing.put(worker_pb2.WorkerMessage(report=worker_pb2.Report(credit=4)))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def __enter__(self) -> StubWorker:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._outgoing.put(_END)
        self._channel.close()
        self._thread.join(5)

    def _messages(self) -> Iterator[worker_pb2.WorkerMessage]:
        while (message := self._outgoing.get()) is not _END:
            assert isinstance(message, worker_pb2.WorkerMessage)
            yield message

    def _run(self) -> None:
        try:
            for message in self._stub.Session(self._messages()):
                if message.HasField("ping"):
                    pong = worker_pb2.Pong(nonce=message.ping.nonce)
                    self._outgoing.put(worker_pb2.WorkerMessage(pong=pong))
                elif message.HasField("assignments"):
                    for assignment in message.assignments.tasks:
                        self._outgoing.put(self._execute(assignment))
        except (grpc.RpcError, ValueError):
            pass  # the channel was closed by __exit__ (ValueError: "Channel closed!")

    def _execute(self, assignment: worker_pb2.Assignment) -> worker_pb2.WorkerMessage:
        outcome = worker_pb2.Outcome(lease_id=assignment.lease_id)
        try:
            args, kwargs = decode_args(assignment.args.body, assignment.args.content_type)
            value = self._handle(assignment.name, args, kwargs)
            outcome.state = tasks_pb2.TASK_STATE_SUCCESS
            outcome.result.CopyFrom(tasks_pb2.Payload(content_type=JSON, body=encode(value)))
        except Exception as exc:
            kind = type(exc)
            outcome.state = tasks_pb2.TASK_STATE_FAILURE
            outcome.error.CopyFrom(
                tasks_pb2.TaskError(
                    type=f"{kind.__module__}.{kind.__qualname__}", message=str(exc),
                    traceback="".join(traceback.format_exception(exc)), retryable=False,
                )
            )  # fmt: skip
        report = worker_pb2.Report(
            credit=1, started_lease_ids=[assignment.lease_id], outcomes=[outcome]
        )
        return worker_pb2.WorkerMessage(report=report)
