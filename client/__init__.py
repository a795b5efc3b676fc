"""Celeriac's Python client: declare tasks, send them to the broker, read their results.

from client import Celeriac

app = Celeriac("tasks", broker="localhost:7475")

@app.task
def add(x, y):
return x + y

add.delay(4, 4).get(timeout=10)  # 8
"""

from __future__ import annotations

from client import errors, states
from client.app import Celeriac
from client.canvas import Signature, chain, chord, group
from client.config import ClientConfig
from client.result import AsyncResult, GroupResult, ResultSet
from client.shared import shared_task
from client.task import Task, TaskOptions

__all__ = [
    "AsyncResult",
    "Celeriac",
    "ClientConfig",
    "GroupResult",
    "ResultSet",
    "Signature",
    "Task",
    "TaskOptions",
    "chain",
    "chord",
    "errors",
    "group",
    "shared_task",
    "states",
]
