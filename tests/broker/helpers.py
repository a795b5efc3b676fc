"""Small builders shared by the broker tests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from celeriac.v1 import client_pb2, tasks_pb2


def json_args(*args: object, **kwargs: object) -> tasks_pb2.Payload:
    body = json.dumps([list(args), kwargs]).encode()
    return tasks_pb2.Payload(content_type="application/json", body=body)


def spec(name: str = "tasks.add", **fields: object) -> tasks_pb2.TaskSpec:
    fields.setdefault("args", json_args(4, 4))
    return tasks_pb2.TaskSpec(name=name, **fields)  # type: ignore[arg-type]


def submit(name: str = "tasks.add", **fields: object) -> client_pb2.SubmitRequest:
    return client_pb2.SubmitRequest(task=spec(name, **fields))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Re-check a condition driven by the broker's loop; each check is a round trip to it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
