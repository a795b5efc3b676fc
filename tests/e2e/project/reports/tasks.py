"""Shared tasks, as a reusable package declares them."""

from __future__ import annotations

import os

from client import shared_task


@shared_task
def summarize(numbers: list[int]) -> dict[str, int]:
    return {"total": sum(numbers), "pid": os.getpid()}
