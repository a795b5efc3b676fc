"""Celery 5 on a Redis server the harness starts: the system Celeriac is compared against."""

from __future__ import annotations

import logging
from typing import Any

from bench.processes import ManagedProcess, rss_bytes
from bench.redis_server import RedisServer
from bench.systems.base import (
    Deployment,
    Pending,
    Unsupported,
    check_answer,
    collect,
)

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
        # The harness's own Redis connection, for queue lengths and purges (opened on first use).
        self.connection: Any = None

    def start(self, deployment: Deployment) -> None:
        if deployment.fake_workers:
            raise Unsupported("lightweight workers speak Celeriac's protocol only")
        if deployment.pool not in POOLS:
            raise Unsupported(f"Celery has no {deployment.pool} pool")
        from bench.systems.celery_app import make_app

        self.redis = RedisServer()
        self.bench = make_app(self.redis.url)
        self.start_workers(deployment)
        if self.workers:
            self.round_trip()

    def start_workers(self, deployment: Deployment) -> None:
        assert self.redis is not None
        queues = ",".join(QUEUES.get(queue, queue) for queue in deployment.queues)
        prefetch = []
        if deployment.prefetch is not None:
            multiplier = max(1, deployment.prefetch // deployment.concurrency)
            prefetch = ["--prefetch-multiplier", str(multiplier)]
        for _ in range(deployment.workers):
            index = len(self.workers)
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
                    *prefetch,
                ],
                env={"BENCH_REDIS_URL": self.redis.url},
            )  # fmt: skip
            self.workers.append(worker)
            worker.wait_for_line(r"\bready\.")

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def ready_count(self) -> int:
        # Kombu's Redis transport keeps a queue as a list named after it (no priorities set).
        return int(self._redis().llen(QUEUES["default"]))

    def _redis(self) -> Any:
        import redis

        assert self.redis is not None
        if self.connection is None:
            self.connection = redis.Redis.from_url(self.redis.url)
        return self.connection

    def stop(self) -> None:
        self.stop_workers()
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        if self.bench is not None:
            self.bench.app.close()
            self.bench = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def submit_one(self, ignore_result: bool = False) -> None:
        if ignore_result:
            self.bench.noop.apply_async(ignore_result=True)
        else:
            self.bench.noop.delay()

    def submit_batch(
        self, count: int, queue: str | None = None, ignore_result: bool = False
    ) -> Pending:
        from celery import group

        options: dict[str, object] = {"queue": QUEUES.get(queue, queue)} if queue else {}
        if ignore_result:
            options["ignore_result"] = True
        result: Pending = group(self.bench.noop.s() for _ in range(count)).apply_async(**options)
        return result

    def submit_stamped(self, count: int) -> Pending:
        from celery import group

        result: Pending = group(self.bench.stamped.s() for _ in range(count)).apply_async()
        return result

    def round_trip(self) -> None:
        answer = self.bench.add.delay(1, 2).get(timeout=ROUND_TRIP_TIMEOUT)
        if answer != 3:
            raise AssertionError(f"add(1, 2) returned {answer!r}")

    def run_chord(self, members: int, timeout: float) -> None:
        from celery import chord

        body = self.bench.count.s()
        result = chord(self.bench.noop.s() for _ in range(members))(body)
        check_answer("chord", collect("chord", result, timeout), members)

    def run_chain(self, links: int, timeout: float) -> None:
        from celery import chain

        inc = self.bench.inc
        result = chain(inc.s(0), *(inc.s() for _ in range(links - 1))).apply_async()
        check_answer("chain", collect("chain", result, timeout), links)

    def purge(self) -> None:
        self._redis().flushall()

    def roles(self) -> dict[str, list[int]]:
        assert self.redis is not None
        return {"broker": [self.redis.pid], "worker": [worker.pid for worker in self.workers]}

    def broker_rss(self) -> int:
        assert self.redis is not None
        return rss_bytes(self.redis.pid)
