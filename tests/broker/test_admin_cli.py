"""The admin commands as an operator runs them: --json, purge's confirmation, scheduled tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from client import Celeriac
from tests.support import ROOT, BrokerProcess, WorkerProcess, run_python

TIMEOUT = 30.0


def admin(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "broker", *args, "--broker", address)


def queues(address: str) -> dict[str, dict[str, object]]:
    listed = admin(address, "queues", "--json")
    assert listed.returncode == 0, listed.stderr
    return {queue["name"]: queue for queue in json.loads(listed.stdout)}


def test_queues_lists_a_queue_whose_tasks_are_all_scheduled_across_a_restart(
    tmp_path: Path,
) -> None:
    data_dir = str(tmp_path / "data")
    with BrokerProcess("--data-dir", data_dir) as broker:
        app = Celeriac("admin-test", broker=broker.address)
        app.send_task("tasks.later", queue="later", countdown=600)
        app.send_task("tasks.now", queue="now")
        app.close()
        assert queues(broker.address)["later"] == {
            "name": "later",
            "ready": 0,
            "scheduled": 1,
            "leased": 0,
            "consumers": 0,
        }
    with BrokerProcess("--data-dir", data_dir) as broker:
        listed = queues(broker.address)
        assert listed["later"]["scheduled"] == 1 and listed["now"]["ready"] == 1
        table = admin(broker.address, "queues").stdout.splitlines()
        assert table[0].split() == ["QUEUE", "READY", "SCHEDULED", "LEASED", "CONSUMERS"]
        assert ["later", "0", "1", "0", "0"] in [line.split() for line in table]


def test_purge_refuses_without_force_when_no_one_can_be_asked_and_names_a_missing_queue() -> None:
    with BrokerProcess("--memory-only") as broker:
        app = Celeriac("admin-test", broker=broker.address)
        app.send_task("tasks.add", queue="emails")
        app.close()
        refused = run_python("-m", "broker", "purge", "emails", "--broker", broker.address)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.startswith("error: purge drops the ready tasks of 'emails' for good")
        assert "-f/--force" in refused.stderr and len(refused.stderr.splitlines()) == 1
        assert queues(broker.address)["emails"]["ready"] == 1  # nothing was dropped

        missing = admin(broker.address, "purge", "emials", "--force")
        assert missing.returncode == 1
        assert (
            missing.stderr.strip() == "error: the broker has no queue 'emials' (its queues: emails)"
        )

        purged = admin(broker.address, "purge", "emails", "--force", "--json")
        assert json.loads(purged.stdout) == {"queue": "emails", "purged": 1}


def test_purge_on_a_terminal_asks_and_drops_only_on_yes() -> None:
    with BrokerProcess("--memory-only") as broker:
        app = Celeriac("admin-test", broker=broker.address)
        app.send_task("tasks.add", queue="emails")
        app.close()
        declined = on_a_terminal(broker.address, "n\n")
        assert "drop the 1 ready task(s) of 'emails' for good? [y/N]" in declined
        assert "nothing purged" in declined
        assert queues(broker.address)["emails"]["ready"] == 1
        confirmed = on_a_terminal(broker.address, "y\n")
        assert "purged 1 task(s) from emails" in confirmed
        assert queues(broker.address)["emails"]["ready"] == 0


def on_a_terminal(address: str, typed: str) -> str:
    """Run ``purge emails`` with a pseudo-terminal as stdin and stdout; return what it showed."""
    controller, terminal = os.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "broker", "purge", "emails", "--broker", address],
        cwd=ROOT,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    ) as process:
        os.close(terminal)
        os.write(controller, typed.encode())
        process.wait(TIMEOUT)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's other side is closed and everything was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return shown.decode()


def test_every_admin_command_speaks_json(tmp_path: Path) -> None:
    with BrokerProcess("--memory-only") as broker:
        assert json.loads(admin(broker.address, "workers", "--json").stdout) == []
        dead = json.loads(admin(broker.address, "dead", "list", "--json").stdout)
        assert dead == {"dead_letters": [], "total": 0}
        requeued = admin(broker.address, "dead", "requeue", "--all", "--json").stdout
        assert json.loads(requeued) == {"requeued": 0}
        assert json.loads(admin(broker.address, "dead", "purge", "--all", "--json").stdout) == {
            "purged": 0
        }


def test_task_looks_a_task_up_and_info_describes_the_broker(broker_process: BrokerProcess) -> None:
    address = broker_process.address
    with WorkerProcess(address, "tests.e2e.tasks", "--pool", "solo"):
        app = Celeriac("admin-test", broker=address)
        done = app.send_task("tests.e2e.tasks.add", args=(2, 3))
        failed = app.send_task("tests.e2e.tasks.fail", args=("boom",))
        assert done.get(timeout=20) == 5
        failed.get(timeout=20, propagate=False)
        app.close()
    looked_up = json.loads(admin(address, "task", done.id, "--json").stdout)
    assert looked_up["state"] == "SUCCESS" and looked_up["result"] == 5
    assert looked_up["name"] == "tests.e2e.tasks.add" and looked_up["attempts"] == 1
    assert looked_up["date_done"] and looked_up["error"] is None
    looked_up_failure = admin(address, "task", failed.id, "--json")
    assert looked_up_failure.returncode == 0, looked_up_failure.stderr
    failure = json.loads(looked_up_failure.stdout)
    assert failure["state"] == "FAILURE"
    assert (
        failure["error"]["type"] == "builtins.ValueError"
        and failure["error"]["kind"] == "user_error"
    )
    shown = admin(address, "task", done.id).stdout.splitlines()
    assert [line.split(maxsplit=1) for line in shown[:3]] == [
        ["task_id", done.id],
        ["state", "SUCCESS"],
        ["name", "tests.e2e.tasks.add"],
    ]
    unknown = admin(address, "task", "no-such-id", "--json")
    assert unknown.returncode == 1
    assert unknown.stderr == "error: NOT_FOUND: unknown task id 'no-such-id'\n"
    info = json.loads(admin(address, "info", "--json").stdout)
    assert info["protocol"] == "celeriac.v1" and info["max_payload_bytes"] == 1024 * 1024
    assert "version" in admin(address, "info").stdout
