"""The worker against a real broker: in-process for the session logic, real processes for
the CLI, signals and exit codes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from broker.testing import RunningBroker, running_broker
from client import Celeriac
from tests.support import ROOT, WorkerProcess, wait_until
from worker import WorkerConfig
from worker.cli import EXIT_COLD_SHUTDOWN, EXIT_USAGE
from worker.codec import ReportBatch
from worker.collector import YOUNG_THRESHOLD
from worker.jobs import Outcome, OutcomeState
from worker.reports import MAX_UNACKNOWLEDGED, STARTED_DELAY, ReportBuffer
from worker.testing import running_worker

MODULE = "tests.worker.tasks_unit"


@contextmanager
def worker_process(address: str, *args: str) -> Iterator[WorkerProcess]:
    """A real `python -m worker` process; its output pipe is closed afterwards (no leak)."""
    with WorkerProcess(address, MODULE, *args) as worker:
        yield worker
    assert worker.process.stdout is not None
    worker.process.stdout.close()


def wait_for_path(path: Path, timeout: float = 20.0) -> None:
    """Wait until a task announces itself by creating `path`."""
    wait_until(path.exists, timeout, f"{path} never appeared")


def test_in_process_worker_runs_tasks_and_reports_custom_states(app: Celeriac) -> None:
    with running_worker([MODULE], app.conf.broker):
        assert app.send_task(f"{MODULE}.add", args=(2, 3)).get(timeout=20) == 5
        assert app.send_task(f"{MODULE}.async_add", args=(1, 1)).get(timeout=20) == 2
        assert app.send_task(f"{MODULE}.reports").get(timeout=20) == "ok"
        with pytest.raises(ValueError, match="boom"):
            app.send_task(f"{MODULE}.fail", args=("boom",)).get(timeout=20)


def test_credit_bounds_what_the_worker_runs_and_many_tasks_all_finish(app: Celeriac) -> None:
    with running_worker([MODULE], app.conf.broker):
        results = [app.send_task(f"{MODULE}.add", args=(i, i)) for i in range(50)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(50)]


def test_report_buffer_sends_one_report_per_loop_turn() -> None:
    flushed: list[ReportBatch | None] = []

    async def main() -> None:
        buffer = ReportBuffer(lambda: flushed.append(buffer.take()))
        buffer.add_credit(2)
        buffer.add_started("a")
        buffer.add_outcome(Outcome("a", OutcomeState.SUCCESS), credit=1)
        buffer.add_started("b")
        await asyncio.sleep(0)  # one loop turn: the scheduled flush runs
        await asyncio.sleep(0)
        buffer.add_returned("c")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert len(flushed) == 2
    first, second = flushed
    assert first is not None and first.credit == 3 and first.started == ["a", "b"]
    assert first.outcomes is not None and [o.lease_id for o in first.outcomes] == ["a"]
    assert second is not None and second.returned == ["c"] and second.credit == 0


def test_a_started_ack_waits_for_its_outcome_and_goes_alone_only_after_a_while() -> None:
    flushed: list[ReportBatch | None] = []

    async def main() -> None:
        buffer = ReportBuffer(lambda: flushed.append(buffer.take()))
        buffer.add_started("quick")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert flushed == []  # nothing else to say yet: the ack waits
        buffer.add_outcome(Outcome("quick", OutcomeState.SUCCESS), credit=1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        buffer.add_started("long")
        await asyncio.sleep(2 * STARTED_DELAY)

    asyncio.run(main())
    assert len(flushed) == 2
    together, alone = flushed
    assert together is not None and together.started == ["quick"] and together.credit == 1
    assert together.outcomes is not None and [o.lease_id for o in together.outcomes] == ["quick"]
    assert alone is not None and alone.started == ["long"] and not alone.outcomes


def test_a_withdrawal_drops_credit_gathered_before_it_and_keeps_credit_added_after() -> None:
    flushed: list[ReportBatch | None] = []

    async def main() -> None:
        buffer = ReportBuffer(lambda: flushed.append(buffer.take()))
        buffer.add_credit(5)
        buffer.add_returned("a")
        buffer.withdraw_credit()
        buffer.add_credit(1)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        buffer.withdraw_credit()  # a withdrawal alone is still worth a Report
        await asyncio.sleep(0)

    asyncio.run(main())
    first, second = flushed
    assert first is not None and first.withdraw_credit and first.credit == 1
    assert first.returned == ["a"]
    assert second is not None and second.withdraw_credit and second.credit == 0


def test_sent_outcomes_the_broker_still_holds_are_sent_again_after_a_reconnect() -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        buffer = ReportBuffer(lambda: None)
        buffer.add_outcome(Outcome("applied", OutcomeState.SUCCESS), credit=1)
        buffer.add_outcome(Outcome("lost", OutcomeState.SUCCESS), credit=1)
        first = buffer.take()  # written to a stream that then broke
        assert first is not None and first.outcomes is not None and len(first.outcomes) == 2
        held = buffer.pending_outcome_leases()  # what the next Hello names
        # The broker applied "applied" (so no longer holds it) and never saw "lost".
        assert buffer.resend_unconfirmed(kept_lease_ids=["lost", "running"]) == 1
        again = buffer.take()
        assert again is not None and again.outcomes is not None
        buffer.keep_sent_for = 0.0  # past the window, sent outcomes are forgotten
        buffer.add_outcome(Outcome("old", OutcomeState.SUCCESS), credit=0)
        buffer.take()
        return held, [o.lease_id for o in again.outcomes], buffer.pending_outcome_leases()

    held, resent, remembered = asyncio.run(main())
    assert held == ["applied", "lost"]
    assert resent == ["lost"]
    assert remembered == []


def test_with_acks_a_sent_outcome_is_kept_until_the_broker_takes_it_however_long() -> None:
    async def main() -> tuple[list[str], list[str], list[str]]:
        buffer = ReportBuffer(lambda: None)
        buffer.acks_outcomes = True
        buffer.keep_sent_for = 0.0  # what would forget it at once without acks
        for lease in ("lost", "acked", "rejected"):
            buffer.add_outcome(Outcome(lease, OutcomeState.SUCCESS), credit=0)
        buffer.take()
        buffer.add_outcome(Outcome("later", OutcomeState.SUCCESS), credit=0)
        buffer.take()  # a later Report: without acks, this forgot the older outcomes
        buffer.acknowledge(["acked", "later"])
        buffer.acknowledge(["rejected"])  # what the worker does with a LeaseRejection
        held = buffer.pending_outcome_leases()
        buffer.resend_unconfirmed(kept_lease_ids=["lost"])
        again = buffer.take()
        assert again is not None and again.outcomes is not None
        return held, [o.lease_id for o in again.outcomes], buffer.pending_outcome_leases()

    held, resent, pending = asyncio.run(main())
    assert held == ["lost"]
    assert resent == ["lost"]
    assert pending == ["lost"]  # sent again, and kept again until acknowledged


def test_unacknowledged_outcomes_are_bounded() -> None:
    async def main() -> list[str]:
        buffer = ReportBuffer(lambda: None)
        buffer.acks_outcomes = True
        for index in range(MAX_UNACKNOWLEDGED + 2):
            buffer.add_outcome(Outcome(f"lease-{index}", OutcomeState.SUCCESS), credit=0)
        buffer.take()
        return buffer.pending_outcome_leases()

    pending = asyncio.run(main())
    assert len(pending) == MAX_UNACKNOWLEDGED
    assert pending[0] == "lease-2"  # the oldest went first


def test_config_reads_the_environment_and_overrides_win() -> None:
    env = {
        "CELERIAC_BROKER": "grpc://h:1",
        "CELERIAC_WORKER_CONCURRENCY": "3",
        "CELERIAC_WORKER_QUEUES": "a, b",
    }
    config = WorkerConfig.from_env(env, concurrency=5)
    assert (config.broker, config.concurrency, config.queues) == ("grpc://h:1", 5, ("a", "b"))
    with pytest.raises(ValueError, match="CELERIAC_WORKER_CONCURRENCY"):
        WorkerConfig.from_env({"CELERIAC_WORKER_CONCURRENCY": "many"})
    with pytest.raises(ValueError, match="pool"):
        WorkerConfig(pool="gevent")


def test_an_unimportable_task_module_exits_with_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "--tasks", "tests.worker.no_such_module"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == EXIT_USAGE
    assert "no_such_module" in done.stderr


def test_a_second_signal_is_a_cold_shutdown(
    broker: RunningBroker, app: Celeriac, tmp_path: Path
) -> None:
    with worker_process(broker.address, "--concurrency", "1") as worker:
        never = tmp_path / "never"
        app.send_task(f"{MODULE}.wait_for_file", args=(str(never),))
        wait_for_path(tmp_path / "never.started")
        worker.signal(signal.SIGTERM)
        worker.wait_for_line("warm")
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == EXIT_COLD_SHUTDOWN
        assert "cold" in worker.output


def test_a_broker_shutdown_drains_the_worker_and_it_reconnects(tmp_path: Path) -> None:
    with (
        running_broker() as first,
        worker_process(first.address, "--pool", "thread", "--concurrency", "1") as worker,
    ):
        mark = worker.line_count()
        first.stop(grace=5)
        worker.wait_for_line("reconnecting", start=mark)
        assert worker.process.poll() is None


def process_gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie nobody reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_children_exit_when_the_worker_is_killed_with_sigkill(
    broker: RunningBroker, app: Celeriac, tmp_path: Path
) -> None:
    never = tmp_path / "never"
    with worker_process(broker.address, "--pool", "process", "--concurrency", "1") as worker:
        app.send_task(f"{MODULE}.pid_then_wait_for_file", args=(str(never),))
        wait_for_path(tmp_path / "never.started")
        child = int((tmp_path / "never.pid").read_text())
        assert child != worker.process.pid and not process_gone(child)
        worker.signal(signal.SIGKILL)  # the worker alone, not its process group
        worker.process.wait(20)  # not worker.wait(): an orphaned child still holds its stdout
        # the task alone would keep it alive for 30 s
        wait_until(lambda: process_gone(child), 20, f"child {child} outlived its worker")


def test_the_worker_process_freezes_its_imports_and_collects_young_objects_less_often(
    broker: RunningBroker, app: Celeriac
) -> None:
    # The thread pool runs tasks in the worker's own process: what the task sees is what
    # `python -m worker` set up for itself before serving (the pool children are covered in
    # test_pools).
    with worker_process(broker.address, "--pool", "thread", "--concurrency", "1"):
        threshold, frozen = app.send_task(f"{MODULE}.collector_settings").get(timeout=20)
    assert threshold == YOUNG_THRESHOLD
    assert frozen > 1000
