"""The broker's memory in a burst of waiters: many held GetResult calls for one large result.

`python -m bench.held_waiters [--waiters 1000] [--result-bytes 900000] [--json] [--checkout DIR]`

One Session stream holds ``--waiters`` GetResult calls for one task; a worker then reports a
result of ``--result-bytes``. Printed: the broker's RSS before the burst, its peak while the
answers go out (sampled every 5 ms), and after they are all read; and the slowest ServerInfo
call another client made meanwhile (whether the burst stalls everyone else). ``--checkout``
runs the broker from another checkout, to compare before and after a change.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from bench.processes import ROOT, ManagedProcess, rss_bytes
from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2, worker_pb2, worker_pb2_grpc

MIB = 1024 * 1024
_QUEUE = "held-waiters"
_TIMEOUT = 120.0


def measure(waiters: int, result_bytes: int, checkout: Path = ROOT) -> dict[str, Any]:
    """Run the burst against a fresh broker process (from ``checkout``) and return its figures."""
    serve = ["-m", "broker", "serve", "--port", "0"]
    broker = ManagedProcess.python("broker", serve, root=checkout)
    try:
        address = broker.wait_for_line(r"listening on (\S+)").group(1)
        with grpc.insecure_channel(address) as channel:
            return _burst(channel, broker.pid, waiters, result_bytes)
    finally:
        broker.stop()


def _burst(channel: grpc.Channel, pid: int, waiters: int, result_bytes: int) -> dict[str, Any]:
    tasks = client_pb2_grpc.TaskServiceStub(channel)
    spec = tasks_pb2.TaskSpec(name="bench.blob", queue=_QUEUE)
    task_id = tasks.Submit(client_pb2.SubmitRequest(task=spec), timeout=_TIMEOUT).task_id
    calls: queue.Queue[client_pb2.SessionCall | None] = queue.Queue()
    stream = client_pb2_grpc.TaskServiceStub(channel).Session(_drain(calls), timeout=_TIMEOUT)
    replies = iter(stream)
    wait = client_pb2.GetResultRequest(task_id=task_id, wait_ms=60_000)
    for call_id in range(1, waiters + 1):
        calls.put(client_pb2.SessionCall(call_id=call_id, get_result=wait))
    # Calls are read in order: once this one is answered, every GetResult above is held.
    calls.put(client_pb2.SessionCall(call_id=waiters + 1, submit=client_pb2.SubmitRequest()))
    first = next(replies)
    assert first.call_id == waiters + 1, first
    before = rss_bytes(pid)

    peak = _Sampler(pid)
    stall = _StallProbe(channel)
    _run_the_task(channel, result_bytes)
    for answered, reply in enumerate(replies, start=1):
        assert len(reply.get_result.result.result.body) == result_bytes, reply.error
        if answered == waiters:
            break
    calls.put(None)
    slowest = stall.stop()
    top = peak.stop()
    after = rss_bytes(pid)
    return {
        "waiters": waiters,
        "result bytes": result_bytes,
        "rss before MiB": round(before / MIB, 1),
        "rss peak MiB": round(top / MIB, 1),
        "rss after MiB": round(after / MIB, 1),
        "peak growth MiB": round((top - before) / MIB, 1),
        "slowest other call ms": round(slowest * 1000, 1),
    }


def _drain(calls: queue.Queue[client_pb2.SessionCall | None]) -> Iterator[client_pb2.SessionCall]:
    while (call := calls.get()) is not None:
        yield call


def _run_the_task(channel: grpc.Channel, result_bytes: int) -> None:
    """Take the task as a worker and report its result (the raw protocol, no worker process)."""
    outgoing: queue.Queue[worker_pb2.WorkerMessage | None] = queue.Queue()
    hello = worker_pb2.Hello(worker_id="bench@held-waiters", queues=[_QUEUE], concurrency=1)
    outgoing.put(worker_pb2.WorkerMessage(hello=hello))
    outgoing.put(worker_pb2.WorkerMessage(report=worker_pb2.Report(credit=1)))
    stream = worker_pb2_grpc.WorkerServiceStub(channel).Session(_drain_worker(outgoing))
    for message in stream:
        if message.WhichOneof("kind") != "assignments" or not message.assignments.tasks:
            continue
        (task,) = message.assignments.tasks
        result = tasks_pb2.Payload(content_type="application/json", body=b"1" * result_bytes)
        outcome = worker_pb2.Outcome(
            lease_id=task.lease_id, state=tasks_pb2.TASK_STATE_SUCCESS, result=result
        )
        report = worker_pb2.Report(started_lease_ids=[task.lease_id], outcomes=[outcome])
        outgoing.put(worker_pb2.WorkerMessage(report=report))
        outgoing.put(None)  # and read on until the broker ends the stream: it has the report


def _drain_worker(
    messages: queue.Queue[worker_pb2.WorkerMessage | None],
) -> Iterator[worker_pb2.WorkerMessage]:
    while (message := messages.get()) is not None:
        yield message


class _Sampler:
    """The peak RSS of a process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peak = rss_bytes(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.005):
            self._peak = max(self._peak, rss_bytes(self._pid))

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self._peak


class _StallProbe:
    """Another client calling ServerInfo back to back; keeps the slowest call's seconds."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = client_pb2_grpc.TaskServiceStub(channel)
        self._slowest = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            started = time.perf_counter()
            self._stub.ServerInfo(client_pb2.ServerInfoRequest(), timeout=_TIMEOUT)
            self._slowest = max(self._slowest, time.perf_counter() - started)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self._slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=1000)
    parser.add_argument("--result-bytes", type=int, default=900_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--checkout", type=Path, default=ROOT, help="run the broker from this checkout"
    )
    args = parser.parse_args()
    figures = measure(args.waiters, args.result_bytes, args.checkout)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:>24}: {value}")


if __name__ == "__main__":
    main()
