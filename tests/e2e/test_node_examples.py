"""The Node.js examples against a real broker: any language works from proto/ alone.

The producer submits to a Python worker (unary, batch, the Session stream with pushed results)
and reads a refusal's typed reason; the Node worker serves a task that the Python client calls.
`make test` installs their pinned dependencies (npm ci in examples/node) first.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from client import Celeriac
from tests.support import ROOT, BrokerProcess, WorkerProcess

NODE_DIR = ROOT / "examples" / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="needs node and examples/node/node_modules (make test installs them)",
)


def run_node(script: str, broker: str) -> list[dict[str, object]]:
    assert NODE is not None
    completed = subprocess.run(
        [NODE, str(NODE_DIR / script)],
        env={"PATH": "/usr/bin:/bin", "CELERIAC_BROKER": broker, "CELERIAC_TRIPS": "5"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines()]


def test_a_node_producer_submits_waits_and_reads_typed_refusals(
    broker_process: BrokerProcess,
) -> None:
    with WorkerProcess(broker_process.address, "examples.get_started.tasks", "--pool", "solo"):
        steps = {step.pop("step"): step for step in run_node("producer.js", broker_process.address)}
    assert steps["unary"]["state"] == "TASK_STATE_SUCCESS" and steps["unary"]["result"] == 8
    assert steps["batch"]["results"] == [2, 4, 6]
    assert steps["session"]["trips"] == 5 and steps["session"]["last"] == 5
    assert steps["refusal"]["code"] == 3  # INVALID_ARGUMENT
    info = steps["refusal"]["info"]
    assert isinstance(info, dict) and info["domain"] == "celeriac.dev" and info["reason"]


def test_a_node_worker_serves_a_task_that_python_calls(broker_process: BrokerProcess) -> None:
    assert NODE is not None
    with subprocess.Popen(
        [NODE, str(NODE_DIR / "worker.js")],
        env={"PATH": "/usr/bin:/bin", "CELERIAC_BROKER": broker_process.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as worker:
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().startswith("node worker ready")
            with Celeriac("node-caller", broker=broker_process.address) as app:
                result = app.send_task("node.multiply", args=(6, 7), queue="node")
                assert result.get(timeout=20) == 42
        finally:
            worker.terminate()
        assert worker.wait(timeout=20) == 0
