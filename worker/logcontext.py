"""The running task's id and name on every log record made while it runs (``--log-format json``).

A task's own ``logging.getLogger(__name__).info(...)`` and the worker's lines about it then carry
``task_id`` and ``task_name``, read from the same context that gives a bound task ``self.request``.
"""

from __future__ import annotations

import logging

from client.context import current_request


class TaskContext(logging.Filter):
    """Adds ``task_id`` and ``task_name`` to records that do not name a task themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; name the task the current context runs, if any."""
        if getattr(record, "task_id", None) is None:
            request = current_request()
            if request is not None:
                record.task_id = request.id
                record.task_name = request.name
        return True
