"""Celeriac through its public interfaces: `python -m broker serve`, `python -m worker`, client."""

from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

import grpc

from bench.processes import ManagedProcess, rss_bytes
from bench.systems.base import Deployment, Pending, check_answer, collect
from celeriac.v1 import admin_pb2, admin_pb2_grpc

logger = logging.getLogger(__name__)

LISTENING = r"listening on (\S+)"
ROUND_TRIP_TIMEOUT = 30.0
ADMIN_TIMEOUT = 30.0
DEFAULT_QUEUE = "default"


class CeleriacSystem:
    """A broker process, worker processes (or lightweight fake workers) and a client here.

    Args:
        name: The system's column in the report.
        broker_flags: Extra ``serve`` flags (``--memory-only``, ``--fsync always``). The broker
            is durable by default, each start in a fresh temporary data dir.
    """

    def __init__(self, name: str = "celeriac", broker_flags: tuple[str, ...] = ()) -> None:
        self.name = name
        self.broker_flags = broker_flags
        self.data_dir: str | None = None
        self.broker: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []
        self.address = ""
        # Admin calls (queue depths, purges) share one channel for the system's life.
        self.admin: grpc.Channel | None = None
        self.bench: Any = None
        self.noop: Any = None

    def start(self, deployment: Deployment) -> None:
        from bench.tasks_celeriac import make_app

        self.start_broker()
        self.bench = make_app(self.url(), **self.client_options())
        # The asyncio pool runs `async def` tasks on its loop; that is how its users write them.
        self.noop = self.bench.async_noop if deployment.pool == "async" else self.bench.noop
        self.admin = self.admin_channel()
        self.start_workers(deployment)
        if deployment.fake_workers:
            fakes = ManagedProcess.python(
                "fake-workers",
                [
                    "-m", "bench.fake_workers",
                    "--broker", self.address,
                    "--count", str(deployment.fake_workers),
                    "--concurrency", str(deployment.concurrency),
                ],
            )  # fmt: skip
            self.workers.append(fakes)
            fakes.wait_for_line(r"fake workers ready")
        if self.workers:
            self.round_trip()

    # What a variant of the system (bench.systems.celeriac_secure, celeriac_cluster) changes.

    def start_broker(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="celeriac-bench-")
        self.broker = ManagedProcess.python(
            "broker",
            [
                "-m", "broker", "serve", "--port", "0", "--log-level", "info",
                "--data-dir", self.data_dir, *self.broker_flags,
            ],
        )  # fmt: skip
        self.address = self.broker.wait_for_line(LISTENING).group(1)

    def worker_url(self, index: int) -> str:
        return self.url()

    def url(self) -> str:
        return self.address

    def client_options(self) -> dict[str, str]:
        return {}

    def worker_flags(self) -> list[str]:
        return []

    def worker_env(self) -> dict[str, str]:
        return {}

    def admin_channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def start_workers(self, deployment: Deployment) -> None:
        for _ in range(deployment.workers):
            self._start_worker(len(self.workers), deployment)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def ready_count(self) -> int:
        for queue in self._queues():
            if queue.name == DEFAULT_QUEUE:
                return queue.ready
        return 0

    def _start_worker(self, index: int, deployment: Deployment) -> None:
        prefetch = []
        if deployment.prefetch is not None:
            prefetch = ["--prefetch-max", str(deployment.prefetch)]
        worker = ManagedProcess.python(
            f"worker-{index}",
            [
                "-m", "worker",
                "--tasks", "bench.tasks_celeriac",
                "--broker", self.worker_url(index),
                "--pool", deployment.pool,
                "--concurrency", str(deployment.concurrency),
                "--queues", ",".join(deployment.queues),
                "--loglevel", "info",
                *prefetch,
                *self.worker_flags(),
            ],
            env={"CELERIAC_BROKER": self.worker_url(index), **self.worker_env()},
        )  # fmt: skip
        self.workers.append(worker)
        worker.wait_for_line(r"worker ready")

    def stop(self) -> None:
        self.stop_workers()
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.bench is not None:
            self.bench.app.close()
            self.bench = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def submit_one(self, ignore_result: bool = False) -> None:
        if ignore_result:
            self.noop.apply_async(ignore_result=True)
        else:
            self.noop.delay()

    def submit_batch(
        self, count: int, queue: str | None = None, ignore_result: bool = False
    ) -> Pending:
        from client import group

        options: dict[str, Any] = {"queue": queue} if queue else {}
        if ignore_result:
            options["ignore_result"] = True
        result: Pending = group(self.noop.s() for _ in range(count)).apply_async(**options)
        return result

    def submit_stamped(self, count: int) -> Pending:
        from client import group

        result: Pending = group(self.bench.stamped.s() for _ in range(count)).apply_async()
        return result

    def round_trip(self) -> None:
        answer = self.bench.add.delay(1, 2).get(timeout=ROUND_TRIP_TIMEOUT)
        if answer != 3:
            raise AssertionError(f"add(1, 2) returned {answer!r}")

    def run_chord(self, members: int, timeout: float) -> None:
        from client import chord

        body = self.bench.count.s()
        result = chord(self.noop.s() for _ in range(members))(body)
        check_answer("chord", collect("chord", result, timeout), members)

    def run_chain(self, links: int, timeout: float) -> None:
        from client import chain

        inc = self.bench.inc
        result = chain(inc.s(0), *(inc.s() for _ in range(links - 1))).apply_async()
        check_answer("chain", collect("chain", result, timeout), links)

    def purge(self) -> None:
        for queue in self._queues():
            self._admin().PurgeQueue(
                admin_pb2.PurgeQueueRequest(queue=queue.name), timeout=ADMIN_TIMEOUT
            )

    def _admin(self) -> admin_pb2_grpc.AdminServiceStub:
        assert self.admin is not None
        return admin_pb2_grpc.AdminServiceStub(self.admin)

    def _queues(self) -> list[admin_pb2.QueueInfo]:
        reply = self._admin().ListQueues(admin_pb2.ListQueuesRequest(), timeout=ADMIN_TIMEOUT)
        return list(reply.queues)

    def roles(self) -> dict[str, list[int]]:
        assert self.broker is not None
        return {"broker": [self.broker.pid], "worker": [worker.pid for worker in self.workers]}

    def broker_rss(self) -> int:
        assert self.broker is not None
        return rss_bytes(self.broker.pid)
