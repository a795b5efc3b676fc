"""A finished task's answer, encoded once and shared by every call that reads it.

A thousand held GetResult calls for one 900 KB result used to build a thousand answer messages
when it landed: the broker's memory grew by the result's size per waiter, and encoding them all
in one loop turn stalled every other client for seconds. Now the first reader encodes the
answer and the others reuse those bytes for as long as any of them holds them (a weak cache: the
bytes go when the last answer is written). A Session answer is the shared bytes after the call's
own ``call_id`` field, which protobuf's encoding allows: a message is the concatenation of its
fields. The registered response serializer (:mod:`broker.service.decoding`) sends bytes as they
are.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import cast

from broker.core.model import TaskRecord
from broker.service import codec
from celeriac.v1 import client_pb2


class SharedResult:
    """The encoded answers for one finished task (each made on first use)."""

    __slots__ = ("__weakref__", "_record", "_session_part", "_unary")

    def __init__(self, record: TaskRecord) -> None:
        self._record = record
        self._unary: bytes | None = None
        self._session_part: bytes | None = None

    def unary(self) -> client_pb2.GetResultResponse:
        """The GetResultResponse, pre-encoded (typed as the message the handler returns)."""
        if self._unary is None:
            answer = client_pb2.GetResultResponse()
            codec.write_result(answer.result, self._record)
            self._unary = answer.SerializeToString()
        return cast(client_pb2.GetResultResponse, self._unary)

    def session_reply(self, call_id: int) -> client_pb2.SessionReply:
        """The SessionReply answering ``call_id``, pre-encoded (see unary)."""
        if self._session_part is None:
            reply = client_pb2.SessionReply()
            codec.write_result(reply.get_result.result, self._record)
            self._session_part = reply.SerializeToString()
        head = client_pb2.SessionReply(call_id=call_id).SerializeToString()
        return cast(client_pb2.SessionReply, head + self._session_part)


class SharedResults:
    """The answers being sent now, by task id and finish time.

    An entry lives while a pending answer holds it (a Session answer waiting for its stream),
    and at least until the end of the loop turn it was made in: every call woken by one result
    resumes in that turn, unary ones included, which hold nothing once they return.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakValueDictionary[tuple[str, float], SharedResult] = (
            weakref.WeakValueDictionary()
        )
        self._pinned: list[SharedResult] = []

    def of(self, record: TaskRecord) -> SharedResult:
        """The shared answer of ``record``, which must be finished."""
        assert record.date_done is not None  # finished: its answer no longer changes
        # The finish time tells a dead letter requeued and finished again from its first end.
        key = (record.task_id, record.date_done)
        shared = self._live.get(key)
        if shared is None:
            shared = self._live[key] = SharedResult(record)
            if not self._pinned:
                asyncio.get_running_loop().call_soon(self._pinned.clear)
            self._pinned.append(shared)
        return shared


def encoded_size(message: client_pb2.SessionReply) -> int:
    """The size of an answer on the wire, whether a message or pre-encoded bytes."""
    if isinstance(message, bytes):
        return len(message)
    return message.ByteSize()
