"""The rate limit of the benchmark's ``bench.stamped`` task, shared by both systems' task modules.

Both declare ``rate_limit=f"{STAMPED_RATE}/s"``: Celeriac holds it across all workers together,
Celery per worker, which is what the rate-limit scenario shows.
"""

from __future__ import annotations

STAMPED_RATE = 50
