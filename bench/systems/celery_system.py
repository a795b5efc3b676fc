"""Celery 5 on a Redis server the harness starts: the system Celeriac is compared against."""

from __future__ import annotations

import logging
from typing import Any

from bench.processes import ManagedProcess, rss_bytes
from bench.redis_server import RedisServer
from bench.systems.base import Deployment, Pending, Unsupported

logger = logging.getLogger(__name__)

# Celeriac pool names to Celery's. Celery has no asyncio pool (eventlet/gevent are not the same
# thing and are not installed), so that variant is skipped on this side.
POOLS = {"process": "prefork", "thread": "threads", "solo": "solo"}
# Celeriac's default queue is "default"; Celery's is "celery".
QUEUES = {"default": "celery"}
ROUND_TRIP_TIMEOUT = 30.0


class CelerySystem:
    """Redis as broker and result backend, `celery worker` processes, a Celery app here."""

    name = "celery"

    def __init__(self) -> None:
        self.redis: RedisServer | None = None
        self.workers: list[ManagedProcess] = []
        self.bench: Any = None

    def start(self, deployment: Deployment) -> None:
        if deployment.fake_workers:
            raise Unsupported("lightweight workers speak Celeriac's protocol only")
        if deployment.pool not in POOLS:
            raise Unsupported(f"Celery has no {deployment.pool} pool")
        from bench.systems.celery_app import make_app

        self.redis = RedisServer()
        self.bench = make_app(self.redis.url)
        queues = ",".join(QUEUES.get(queue, queue) for queue in deployment.queues)
        for index in range(deployment.workers):
            worker = ManagedProcess.python(
                f"celery-worker-{index}",
                [
                    "-m", "celery", "-A", "bench.systems.celery_app", "worker",
                    "--pool", POOLS[deployment.pool],
                    "--concurrency", str(deployment.concurrency),
                    "--queues", queues,
                    "--hostname", f"bench{index}@%h",
                    "--loglevel", "info",
                    # Events the benchmark does not use; turning them off only helps Celery.
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                env={"BENCH_REDIS_URL": self.redis.url},
            )  # fmt: skip
            self.workers.append(worker)
            worker.wait_for_line(r"\bready\.")
        if self.workers:
            self.round_trip()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []
        if self.bench is not None:
            self.bench.app.close()
            self.bench = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def submit_one(self) -> None:
        self.bench.noop.delay()

    def submit_batch(self, count: int, queue: str | None = None) -> Pending:
        from celery import group

        options = {"queue": QUEUES.get(queue, queue)} if queue else {}
        result: Pending = group(self.bench.noop.s() for _ in range(count)).apply_async(**options)
        return result

    def round_trip(self) -> None:
        answer = self.bench.add.delay(1, 2).get(timeout=ROUND_TRIP_TIMEOUT)
        if answer != 3:
            raise AssertionError(f"add(1, 2) returned {answer!r}")

    def purge(self) -> None:
        import redis

        assert self.redis is not None
        with redis.Redis.from_url(self.redis.url) as connection:
            connection.flushall()

    def roles(self) -> dict[str, list[int]]:
        assert self.redis is not None
        return {"broker": [self.redis.pid], "worker": [worker.pid for worker in self.workers]}

    def broker_rss(self) -> int:
        assert self.redis is not None
        return rss_bytes(self.redis.pid)
