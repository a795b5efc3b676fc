"""Celeriac's Python client: declare tasks, send them to the broker, read their results."""

from __future__ import annotations

from client import errors
from client.task import Task, TaskOptions

__all__ = ["Task", "TaskOptions", "errors"]
