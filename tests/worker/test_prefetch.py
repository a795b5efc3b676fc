"""Adaptive prefetch: the credit policy on its own (injected times), then real workers against an
in-process broker, observed through the broker's AdminService (never through timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.config import BrokerConfig
from broker.testing import RunningBroker, running_broker
from celeriac.v1 import admin_pb2, admin_pb2_grpc
from client import Celeriac, group
from client.canvas import Signature
from tests.support import wait_until
from tests.worker import tasks_unit
from worker.jobs import Job, Payload
from worker.prefetch import CompletionRate, Prefetch
from worker.testing import RunningWorker

MODULE = "tests.worker.tasks_unit"
ADD = f"{MODULE}.add"


def job(lease_id: str) -> Job:
    return Job(lease_id=lease_id, task_id=lease_id, name=ADD, args=Payload("json", b"[]"))


# -- the policy ------------------------------------------------------------------------------


def test_without_completions_only_free_slots_get_credit() -> None:
    prefetch = Prefetch(slots=2, max_extra=100, hold=1.0)
    assert prefetch.credit_to_grant(running=0, now=0.0) == 2
    prefetch.granted(2)
    assert prefetch.credit_to_grant(running=0, now=0.0) == 0


def test_a_high_completion_rate_grants_a_capped_buffer_in_chunks() -> None:
    prefetch = Prefetch(slots=2, max_extra=50, hold=1.0, window=0.02)
    for tick in range(1, 2001):  # 10,000 completions per second for 0.2 s
        prefetch.finished(tick / 10_000)
    now = 0.2
    assert prefetch.extra(now) == 50  # 10k/s x 20 ms = 200, capped at max_extra
    assert prefetch.credit_to_grant(running=2, now=now) == 50
    prefetch.granted(50)
    # One more finished task is not worth a message: prefetch credit goes out in chunks ...
    assert prefetch.credit_to_grant(running=1, now=now) == 0
    # ... but a free slot with nothing to cover it is granted at once.
    prefetch.broker_credit = 0
    assert prefetch.credit_to_grant(running=1, now=now) == 51


def test_the_rate_falls_back_after_a_quiet_spell() -> None:
    rate = CompletionRate()
    for tick in range(1, 1001):
        rate.record(tick / 1000)
    assert rate.per_second(1.0) > 500
    assert rate.per_second(20.0) < 5  # long tasks (or no work) mean no prefetch


def test_the_rate_rises_within_a_fifth_of_a_second_and_falls_over_about_a_second() -> None:
    rate = CompletionRate(tau=0.5)
    for tick in range(1, 2001):  # 10,000 completions per second for 0.2 s
        rate.record(tick / 10_000)
    risen = rate.per_second(0.2)
    assert risen > 7_000  # symmetric averaging over 0.5 s would be at ~2,600
    # 0.2 s with nothing finished: a symmetric fast average would be near zero already.
    assert rate.per_second(0.4) > 0.5 * risen


def test_prefetch_zero_disables_it() -> None:
    prefetch = Prefetch(slots=3, max_extra=0, hold=1.0)
    for tick in range(1, 1001):
        prefetch.finished(tick / 1000)
    assert prefetch.extra(1.0) == 0
    assert prefetch.credit_to_grant(running=0, now=1.0) == 3


def test_past_the_hold_limit_every_buffered_job_goes_back_and_prefetch_stops() -> None:
    prefetch = Prefetch(slots=1, max_extra=10, hold=1.0, window=1.0)
    for tick in range(1, 101):
        prefetch.finished(tick / 100)
    prefetch.granted(prefetch.credit_to_grant(running=0, now=1.0))
    for index, at in enumerate((1.0, 1.5)):
        prefetch.assigned(job(f"j{index}"), at)
    assert prefetch.oldest_due() == 2.0
    assert prefetch.expire(1.9) == []
    assert [j.lease_id for j in prefetch.expire(2.0)] == ["j0", "j1"]
    assert prefetch.extra(2.0) == 0  # held back ...
    prefetch.finished(2.1)
    assert prefetch.extra(2.1) > 0  # ... until a running task finishes


def test_credit_accounting_follows_assignments_and_sessions() -> None:
    prefetch = Prefetch(slots=2, max_extra=0, hold=1.0)
    prefetch.granted(2)
    prefetch.assigned(job("a"), 0.0)
    assert (prefetch.broker_credit, len(prefetch)) == (1, 1)
    assert prefetch.keep_only({"b"}) == [job("a")]  # the broker did not keep "a"
    prefetch.new_session()
    assert prefetch.broker_credit == 0
    assert prefetch.credit_to_grant(running=0, now=0.0) == 2


# -- real workers ----------------------------------------------------------------------------


class InProcessWorker(RunningWorker):
    """A thread-pool worker of the unit-test tasks that can tell the credit it granted."""

    def __init__(self, address: str, concurrency: int = 2, **settings: Any) -> None:
        super().__init__([MODULE], address, concurrency=concurrency, **settings)

    def granted(self) -> int:
        """The credit this worker believes the broker holds for it (read on its loop)."""

        async def read() -> int:
            return self.worker._prefetch.broker_credit

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(10)


class Admin:
    """The broker's AdminService, as an operator sees it."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    def worker(self, worker_id: str) -> admin_pb2.WorkerInfo | None:
        workers = self._stub.ListWorkers(admin_pb2.ListWorkersRequest(), timeout=10).workers
        return next((w for w in workers if w.worker_id == worker_id), None)

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def admin(broker: RunningBroker) -> Iterator[Admin]:
    stub = Admin(broker.address)
    yield stub
    stub.close()


def burst(app: Celeriac, count: int) -> None:
    results = group(Signature(app, ADD, (i, 1)) for i in range(count)).apply_async()
    assert results.get(timeout=30) == [i + 1 for i in range(count)]


@pytest.mark.parametrize(("prefetch_max", "more_than_slots"), [(100, True), (0, False)])
def test_short_tasks_grow_the_credit_beyond_free_slots_exactly_as_granted(
    app: Celeriac, admin: Admin, prefetch_max: int, more_than_slots: bool
) -> None:
    # A one-second window: any completion rate over a few tasks per second asks for prefetch.
    with InProcessWorker(
        app.conf.broker, hostname="w-burst", prefetch_max=prefetch_max, prefetch_window=1.0
    ) as worker:
        burst(app, 300)
        info = admin.worker("w-burst")
        assert info is not None and info.leased == 0
        assert (info.credit > 2) is more_than_slots
        assert info.credit >= 2  # every free slot stays covered
        assert info.credit == worker.granted()  # granted - assigned, exactly


def test_a_long_task_hands_its_buffered_short_tasks_back_to_another_worker(
    app: Celeriac, admin: Admin, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    address = app.conf.broker
    settings = {"prefetch_window": 1.0, "prefetch_hold": 0.2}
    with InProcessWorker(address, concurrency=1, hostname="w-busy", **settings):
        burst(app, 200)  # a high completion rate: credit for many more than one slot
        info = admin.worker("w-busy")
        assert info is not None and info.credit >= 6
        long = app.send_task(f"{MODULE}.wait_for_file", args=(str(release),))
        shorts = [app.send_task(ADD, args=(i, i)) for i in range(5)]
        # The long task runs and the short ones wait behind it, in the busy worker's buffer ...
        wait_until(lambda: (w := admin.worker("w-busy")) is not None and w.leased == 6)
        with InProcessWorker(address, concurrency=1, hostname="w-free"):
            # ... until the hold limit hands them back and the free worker runs them.
            assert [r.get(timeout=20) for r in shorts] == [0, 2, 4, 6, 8]
            assert not long.ready()
            release.touch()
            assert long.get(timeout=20) == "released"


def test_credit_is_exact_again_after_a_drain_and_a_reconnect() -> None:
    with running_broker() as first:
        port = int(first.address.rpartition(":")[2])
        client = Celeriac("prefetch-reconnect", broker=first.address)
        client.tasks.update(tasks_unit.app.tasks)
        with InProcessWorker(first.address, hostname="w-again", prefetch_window=1.0) as worker:
            burst(client, 200)
            first.stop(grace=5)  # drains the worker: it stops taking work and reconnects
            second = RunningBroker(BrokerConfig(host="127.0.0.1", port=port))
            second.start()
            admin = Admin(second.address)
            try:
                wait_until(lambda: admin.worker("w-again") is not None)
                burst(client, 200)
                info = admin.worker("w-again")
                assert info is not None and info.leased == 0 and info.credit >= 2
                assert info.credit == worker.granted()
            finally:
                admin.close()
                client.close()
                second.stop()
