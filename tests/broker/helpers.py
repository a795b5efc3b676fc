"""Small builders shared by the broker tests."""

from __future__ import annotations

import json

from celeriac.v1 import client_pb2, tasks_pb2


def json_args(*args: object, **kwargs: object) -> tasks_pb2.Payload:
    body = json.dumps([list(args), kwargs]).encode()
    return tasks_pb2.Payload(content_type="application/json", body=body)


def spec(name: str = "tasks.add", **fields: object) -> tasks_pb2.TaskSpec:
    fields.setdefault("args", json_args(4, 4))
    return tasks_pb2.TaskSpec(name=name, **fields)  # type: ignore[arg-type]


def submit(name: str = "tasks.add", **fields: object) -> client_pb2.SubmitRequest:
    return client_pb2.SubmitRequest(task=spec(name, **fields))
