"""app.control and inspect() end to end: a broker process, worker processes, the client's calls.

Control requests travel down the workers' own sessions (AdminService.ControlWorkers); these
tests drive each command through that real path and check what the workers actually did.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import Celeriac
from client.errors import InvalidTaskSpec, PermissionDenied, TaskRevokedError
from tests.e2e import controlled_tasks as tasks
from tests.support import BrokerProcess, WorkerProcess, run_python, wait_until

StartWorker = Callable[..., WorkerProcess]
MODULE = "tests.e2e.controlled_tasks"
HOLD = "tests.e2e.controlled_tasks.hold"


@pytest.fixture
def app(broker_process: BrokerProcess) -> Iterator[Celeriac]:
    """The task module's app, pointed at this test's broker."""
    tasks.app.conf = Celeriac("control-client", broker=broker_process.address).conf
    yield tasks.app
    tasks.app.close()


def worker(start_worker: StartWorker, name: str, *flags: str) -> WorkerProcess:
    return start_worker("--hostname", name, *flags, tasks=MODULE)


def test_inspect_answers_for_each_worker_in_celerys_shapes(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    w1 = worker(start_worker, "w1", "--concurrency", "1")
    worker(start_worker, "w2", "--pool", "thread", "--concurrency", "2", "--queues", "other")
    running = tasks.hold.delay(str(tmp_path / "release"))
    child = int(w1.wait_for_line(rf"RUNNING {running.id} pid=(\d+)").group(1))
    later = tasks.whereabouts.apply_async(countdown=600, priority=3)
    inspect = app.control.inspect()

    assert inspect.ping() == {"w1": {"ok": "pong"}, "w2": {"ok": "pong"}}
    assert inspect.missing == []
    active = inspect.active()
    assert active is not None and active["w2"] == []
    [entry] = active["w1"]
    assert entry["id"] == running.id and entry["name"] == HOLD
    assert entry["args"] == [str(tmp_path / "release")] and entry["kwargs"] == {}
    assert entry["hostname"] == "w1" and entry["acknowledged"] is True
    assert entry["worker_pid"] == child
    assert abs(entry["time_start"] - time.time()) < 60
    assert entry["delivery_info"] == {
        "exchange": "",
        "routing_key": "default",
        "priority": 0,
        "redelivered": False,
    }
    assert inspect.reserved() == {"w1": [], "w2": []}
    assert inspect.query_task(running.id, "no-such-id") == {
        "w1": {running.id: ["active", entry]},
        "w2": {},
    }
    registered = inspect.registered()
    assert registered is not None and HOLD in registered["w1"] and HOLD in registered["w2"]
    assert inspect.active_queues() == {
        "w1": [
            {
                "name": "default",
                "routing_key": "default",
                "exchange": {"name": "", "type": "direct"},
            }
        ],
        "w2": [
            {"name": "other", "routing_key": "other", "exchange": {"name": "", "type": "direct"}}
        ],
    }
    stats = inspect.stats()
    assert stats is not None
    assert stats["w1"]["pid"] == w1.process.pid
    assert stats["w1"]["pool"] == {
        "implementation": "process",
        "max-concurrency": 1,
        "processes": [child],
    }
    assert stats["w2"]["pool"]["implementation"] == "thread"
    assert stats["w1"]["active"] == 1

    # Delays live at the broker: it answers scheduled() itself, under one key.
    [due] = inspect.scheduled()["broker"]
    assert due["request"]["id"] == later.id and due["priority"] == 3

    only_w2 = app.control.inspect(destination=["w2", "nobody"])
    assert only_w2.ping() == {"w2": {"ok": "pong"}}
    assert only_w2.unknown == ["nobody"]

    (tmp_path / "release").touch()
    assert running.get(timeout=20) == "released"
    wait_until(lambda: (inspect.stats() or {})["w1"]["total"] == {HOLD: 1}, timeout=20)


def test_request_hostname_and_delivery_info_reach_the_task(
    app: Celeriac, start_worker: StartWorker
) -> None:
    worker(start_worker, "w-info", "--pool", "thread", "--concurrency", "1")
    assert tasks.whereabouts.apply_async(priority=7).get(timeout=20) == {
        "hostname": "w-info",
        "delivery_info": {
            "exchange": "",
            "routing_key": "default",
            "priority": 7,
            "redelivered": False,
        },
    }


def test_revoke_terminate_kills_the_child_and_the_worker_keeps_serving(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    w = worker(start_worker, "w-kill", "--concurrency", "1")
    running = tasks.hold.delay(str(tmp_path / "never"))
    child = int(w.wait_for_line(rf"RUNNING {running.id} pid=(\d+)").group(1))
    began = time.monotonic()
    assert app.control.revoke(running.id, terminate=True, signal="SIGKILL") == ["cancel-sent"]
    with pytest.raises(TaskRevokedError):
        running.get(timeout=10)
    assert time.monotonic() - began < 5
    w.wait_for_line(
        rf"REVOKED-SIGNAL {HOLD} {running.id} terminated=True signum={int(signal.SIGKILL)} "
        rf"expired=False pid={w.process.pid}"
    )
    w.wait_for_line(f"replaced child process {child} with")
    wait_until(lambda: not _alive(child), timeout=10)
    # The worker carries on with a new child.
    follow = tasks.hold.delay(str(tmp_path / "released"))
    (tmp_path / "released").touch()
    assert follow.get(timeout=20) == "released"
    inspect = app.control.inspect()
    stats = inspect.stats()
    assert stats is not None and child not in stats["w-kill"]["pool"]["processes"]
    assert inspect.active() == {"w-kill": []}


def test_revoke_terminate_on_a_thread_pool_reports_revoked_at_once(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    w = worker(start_worker, "w-threads", "--pool", "thread", "--concurrency", "1")
    running = tasks.hold.delay(str(tmp_path / "never"))
    w.wait_for_line(f"RUNNING {running.id}")
    app.control.revoke(running.id, terminate=True)
    with pytest.raises(TaskRevokedError):
        running.get(timeout=10)
    # No process to kill: signum is None; TaskRevokedError is raised in the task's thread.
    w.wait_for_line(
        rf"REVOKED-SIGNAL {HOLD} {running.id} terminated=True signum=None expired=False "
        rf"pid={w.process.pid}"
    )
    assert tasks.whereabouts.delay().get(timeout=20)["hostname"] == "w-threads"
    assert app.control.inspect().active() == {"w-threads": []}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    app = Celeriac("no-broker", broker="127.0.0.1:9")  # never reached: nothing is sent
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        app.control.revoke("some-id", terminate=True, signal="SIGNOPE")
    with pytest.raises(ValueError, match="timeout must be over 0 and at most 60 s"):
        app.control.inspect(timeout=61)
    with pytest.raises(ValueError, match="unknown control command 'add_consumer'"):
        app.control.broadcast("add_consumer", {"queue": "x"})
    with pytest.raises(ValueError, match="takes no destination"):
        app.control.rate_limit("x", "1/s", destination=["w1"])
    with pytest.raises(InvalidTaskSpec, match="'often' is not 'N/s'"):
        app.control.broadcast("rate_limit", {"task_name": "x", "rate_limit": "often"})
    with pytest.raises(ValueError, match="pool_grow does not take"):
        app.control.broadcast("pool_grow", {"count": 2})


def test_shutdown_through_control_ends_the_worker_with_exit_0(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    w = worker(start_worker, "w-down", "--pool", "thread", "--concurrency", "1", "--queues", "down")
    stays = worker(start_worker, "w-stays", "--pool", "thread", "--concurrency", "1")
    running = tasks.hold.apply_async((str(tmp_path / "release"),), queue="down")
    w.wait_for_line(f"RUNNING {running.id}")
    replies = app.control.shutdown(destination=["w-down"], reply=True)
    assert replies == [{"w-down": {"ok": "shutting down"}}]
    w.wait_for_line("worker shutting down \\(warm\\)")
    # Asked again, it stays warm (a second SIGTERM would kill the running task).
    assert app.control.shutdown(destination=["w-down"], reply=True) == replies
    (tmp_path / "release").touch()
    assert running.get(timeout=20) == "released"  # a warm shutdown finishes what runs
    assert w.wait(timeout=20) == 0
    assert app.control.inspect().ping() == {"w-stays": {"ok": "pong"}}
    assert stays.process.poll() is None


def test_pool_grow_lets_more_tasks_run_at_once_and_shrink_takes_slots_back(
    app: Celeriac, start_worker: StartWorker, tmp_path: Path
) -> None:
    w = worker(start_worker, "w-pool", "--concurrency", "1", "--prefetch-max", "0")
    release = str(tmp_path / "release")
    first, second = tasks.hold.delay(release), tasks.hold.delay(release)
    w.wait_for_line(f"RUNNING {first.id}")
    inspect = app.control.inspect(destination="w-pool")
    assert [t["id"] for t in (inspect.active() or {})["w-pool"]] == [first.id]

    assert app.control.pool_grow(1, reply=True) == [{"w-pool": {"ok": "pool will grow"}}]
    w.wait_for_line(f"RUNNING {second.id}")
    active = (inspect.active() or {})["w-pool"]
    assert sorted(t["id"] for t in active) == sorted([first.id, second.id])
    assert len({t["worker_pid"] for t in active}) == 2

    assert app.control.pool_shrink(1, reply=True) == [{"w-pool": {"ok": "pool will shrink"}}]
    Path(release).touch()
    assert first.get(timeout=20) == second.get(timeout=20) == "released"

    def shrunk() -> bool:
        pool = (inspect.stats() or {})["w-pool"]["pool"]
        return pool["max-concurrency"] == 1 and len(pool["processes"]) == 1

    wait_until(shrunk, timeout=20)
    refused = app.control.pool_shrink(1, reply=True)
    assert refused is not None and "keeps one" in refused[0]["w-pool"]["error"]


def test_a_worker_that_does_not_answer_in_time_is_reported_missing(
    app: Celeriac, start_worker: StartWorker
) -> None:
    worker(start_worker, "w-awake", "--pool", "thread", "--concurrency", "1")
    asleep = worker(start_worker, "w-asleep", "--pool", "thread", "--concurrency", "1")
    inspect = app.control.inspect(timeout=0.5)
    os.kill(asleep.process.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        assert inspect.ping() == {"w-awake": {"ok": "pong"}}
        assert inspect.missing == ["w-asleep"]
        assert time.monotonic() - began < 5
    finally:
        os.kill(asleep.process.pid, signal.SIGCONT)
    assert inspect.ping() == {"w-awake": {"ok": "pong"}, "w-asleep": {"ok": "pong"}}
    assert inspect.missing == []


def test_inspect_needs_an_admin_token_when_tokens_are_configured(tmp_path: Path) -> None:
    tokens = {"producer": "p" * 24, "worker": "w" * 24, "admin": "a" * 24}
    path = tmp_path / "tokens"
    path.write_text("".join(f"{role}:{role}-name:{token}\n" for role, token in tokens.items()))
    path.chmod(0o600)
    with BrokerProcess("--tokens-file", str(path), "--memory-only") as broker:
        env = {"CELERIAC_TOKEN": tokens["worker"]}
        flags = ("--hostname", "w-secure", "--pool", "thread", "--concurrency", "1")
        with WorkerProcess(broker.address, MODULE, *flags, env=env):
            producer = Celeriac("producer", broker=broker.address, token=tokens["producer"])
            with pytest.raises(PermissionDenied, match="ControlWorkers needs admin"):
                producer.control.inspect().ping()
            with pytest.raises(PermissionDenied):
                producer.control.shutdown(destination=["w-secure"])
            producer.close()
            admin = Celeriac("admin", broker=broker.address, token=tokens["admin"])
            assert admin.control.inspect().ping() == {"w-secure": {"ok": "pong"}}
            admin.close()


def test_the_cli_inspects_and_controls_workers(
    app: Celeriac, broker_process: BrokerProcess, start_worker: StartWorker, tmp_path: Path
) -> None:
    w = worker(start_worker, "w-cli", "--concurrency", "1")
    running = tasks.hold.delay(str(tmp_path / "release"))
    child = w.wait_for_line(rf"RUNNING {running.id} pid=(\d+)").group(1)
    broker = ("--broker", broker_process.address)

    active = run_python("-m", "broker", "inspect", "active", *broker)
    assert active.returncode == 0, active.stderr
    assert active.stdout.splitlines() == [
        "w-cli: 1 task(s)",
        f'  {HOLD}[{running.id}] args=["{tmp_path / "release"}"] kwargs={{}} pid={child} '
        "queue=default",
    ]
    as_json = run_python("-m", "broker", "inspect", "active", "--json", *broker)
    assert [task["id"] for task in json.loads(as_json.stdout)["w-cli"]] == [running.id]
    scheduled = run_python("-m", "broker", "inspect", "scheduled", "--json", *broker)
    assert json.loads(scheduled.stdout) == {"scheduled": [], "total": 0}
    pinged = run_python("-m", "broker", "inspect", "ping", "--json", *broker)
    assert json.loads(pinged.stdout) == {"w-cli": {"ok": "pong"}}
    grown = run_python("-m", "broker", "control", "pool-grow", "2", "-d", "w-cli", *broker)
    assert grown.stdout == "w-cli: pool will grow\n", grown.stderr
    stats = run_python("-m", "broker", "inspect", "stats", *broker)
    assert "pool=process concurrency=3 children=" in stats.stdout, stats.stderr
    listed = run_python("-m", "broker", "workers", *broker)  # the broker's view follows
    assert listed.stdout.splitlines()[1].split()[:4] == ["w-cli", "default", "process", "3"]
    silent = run_python("-m", "broker", "inspect", "ping", "-d", "w-cli,nobody", *broker)
    assert silent.returncode == 1
    assert silent.stdout == "w-cli: pong\n" and "not connected: nobody" in silent.stderr
    revoked = run_python("-m", "broker", "control", "revoke", running.id, "--terminate", *broker)
    assert revoked.stdout == f"{running.id}: cancel-sent\n", revoked.stderr
    with pytest.raises(TaskRevokedError):
        running.get(timeout=10)
    down = run_python("-m", "broker", "control", "shutdown", "-d", "w-cli", *broker)
    assert down.stdout == "w-cli: shutting down\n", down.stderr
    assert w.wait(timeout=20) == 0
