"""A worker written with the raw generated stubs, to drive Session streams from tests."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc

from celeriac.v1 import tasks_pb2, worker_pb2, worker_pb2_grpc

WAIT = 5.0


class FakeWorker:
    """Opens a Session stream, sends Hello, and exposes what the broker sends back."""

    def __init__(
        self,
        address: str,
        worker_id: str = "fake@test:1",
        queues: tuple[str, ...] = (),
        held: tuple[str, ...] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        self.channel = channel or grpc.insecure_channel(address)
        self._owns_channel = channel is None
        self._outgoing: queue.Queue[worker_pb2.WorkerMessage | None] = queue.Queue()
        self._incoming: queue.Queue[worker_pb2.BrokerMessage | grpc.RpcError | None] = queue.Queue()
        hello = worker_pb2.Hello(
            worker_id=worker_id, hostname="test", pid=1, queues=queues, held_lease_ids=held
        )
        self._outgoing.put(worker_pb2.WorkerMessage(hello=hello))
        stub = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self.call = stub.Session(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.error: grpc.RpcError | None = None
        # OutcomeAcks messages skipped while waiting for something else, in arrival order.
        self.outcome_acks: list[worker_pb2.OutcomeAcks] = []
        self.welcome = self.expect("welcome").welcome

    def _requests(self) -> Iterator[worker_pb2.WorkerMessage]:
        while (message := self._outgoing.get()) is not None:
            yield message

    def _read(self) -> None:
        try:
            for message in self.call:
                self._incoming.put(message)
            self._incoming.put(None)
        except grpc.RpcError as error:
            self._incoming.put(error)

    def send(self, message: worker_pb2.WorkerMessage) -> None:
        self._outgoing.put(message)

    def report(self, **fields: object) -> None:
        self.send(worker_pb2.WorkerMessage(report=worker_pb2.Report(**fields)))  # type: ignore[arg-type]

    def credit(self, count: int) -> None:
        self.report(credit=count)

    def expect(self, kind: str, timeout: float = WAIT) -> worker_pb2.BrokerMessage:
        """The next message of ``kind`` (pings are answered and skipped, outcome acks skipped)."""
        while True:
            item = self._incoming.get(timeout=timeout)
            if item is None or isinstance(item, grpc.RpcError):
                self.error = item
                raise AssertionError(f"stream ended while waiting for {kind}: {item!r}")
            if item.WhichOneof("kind") == "ping":
                self.send(worker_pb2.WorkerMessage(pong=worker_pb2.Pong(nonce=item.ping.nonce)))
                if kind != "ping":
                    continue
            if item.WhichOneof("kind") == "outcome_acks" and kind != "outcome_acks":
                self.outcome_acks.append(item.outcome_acks)
                continue
            if item.WhichOneof("kind") != kind:
                raise AssertionError(f"expected {kind}, got {item}")
            return item

    def assignments(self, count: int, timeout: float = WAIT) -> list[worker_pb2.Assignment]:
        tasks: list[worker_pb2.Assignment] = []
        while len(tasks) < count:
            tasks.extend(self.expect("assignments", timeout).assignments.tasks)
        return tasks

    def end_status(self, timeout: float = WAIT) -> grpc.StatusCode | None:
        """Wait for the stream to end; returns its status code (None for OK)."""
        while True:
            item = self._incoming.get(timeout=timeout)
            if item is None:
                return None
            if isinstance(item, grpc.RpcError):
                self.error = item
                return item.code()

    def succeed(self, lease_id: str, body: bytes = b"8") -> None:
        result = tasks_pb2.Payload(content_type="application/json", body=body)
        outcome = worker_pb2.Outcome(
            lease_id=lease_id, state=tasks_pb2.TASK_STATE_SUCCESS, result=result
        )
        self.report(outcomes=[outcome])

    def close(self) -> None:
        self._outgoing.put(None)
        if self._owns_channel:
            self.channel.close()
