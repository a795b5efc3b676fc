"""A session submit that sends a new task to a worker writes the assignment before the answer.

The answer also waits for the journal (acknowledged means recorded); the assignment does not.

The two go out on different streams, so a test over real sockets cannot see their order; this
one drives `ClientSession` with a stand-in service and stream that record what happens when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import grpc.aio

from broker.config import BrokerConfig
from broker.service.client_session import ClientSession
from broker.service.peers import PeerLimits
from celeriac.v1 import client_pb2


class _Service:
    """Answers submits and records flushes; `assigned` says whether a flush queued anything."""

    def __init__(self, events: list[str], *, created: bool, assigned: bool) -> None:
        self._events = events
        self._created = created
        self._assigned = assigned

    async def submit(self, request: client_pb2.SubmitRequest) -> client_pb2.SubmitResponse:
        self._events.append("submit")
        return client_pb2.SubmitResponse(task_id=request.task.task_id, created=self._created)

    shutting_down = False

    def on_shutdown(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None

    def flush_now(self) -> bool:
        self._events.append("flush")
        if self._assigned:
            # What the worker stream's writer does once the loop lets it run.
            asyncio.get_running_loop().call_soon(self._events.append, "assignment written")
        return self._assigned

    async def durable(self) -> None:
        # What the journal does: the answer waits for the commit, after the assignment.
        await asyncio.sleep(0)
        self._events.append("recorded")


class _Stream:
    """One call, then the end of the stream; records every answer written."""

    def __init__(self, events: list[str], call: client_pb2.SessionCall) -> None:
        self._events = events
        self._calls: list[object] = [call, grpc.aio.EOF]  # type: ignore[attr-defined]

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def read(self) -> object:
        return self._calls.pop(0)

    async def write(self, reply: client_pb2.SessionReply) -> None:
        self._events.append("answer written")


def _serve(*, created: bool, assigned: bool) -> list[str]:
    events: list[str] = []
    call = client_pb2.SessionCall(call_id=1)
    call.submit.task.task_id = "t1"
    service, stream = _Service(events, created=created, assigned=assigned), _Stream(events, call)
    peers = PeerLimits(max_sessions=1, max_held_calls=1)
    session = ClientSession(cast(Any, service), cast(Any, stream), BrokerConfig(), peers)
    asyncio.run(session.serve())
    return events


def test_a_new_task_sent_to_a_worker_is_written_before_the_answer() -> None:
    assert _serve(created=True, assigned=True) == [
        "submit",
        "flush",
        "assignment written",
        "recorded",
        "answer written",
    ]


def test_a_new_task_with_no_worker_free_is_answered_at_once() -> None:
    assert _serve(created=True, assigned=False) == ["submit", "flush", "recorded", "answer written"]


def test_a_repeated_task_id_is_answered_before_anything_else_runs() -> None:
    # Its result may already be on its way to this stream: the answer must go first.
    assert _serve(created=False, assigned=True) == ["submit", "recorded", "answer written"]
