"""The Go example against a real broker: stubs generated from proto/ are all a Go service needs.

`make test` builds it first (`make go-example`, from Debian's Go packages); run alone, the test
needs that build and says so.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import ROOT, BrokerProcess, WorkerProcess

PRODUCER = ROOT / ".tools" / "go" / "bin" / "producer"

pytestmark = pytest.mark.skipif(
    not PRODUCER.is_file(), reason="needs the Go example built: run `make go-example` first"
)


def test_a_go_producer_submits_waits_streams_and_reads_typed_refusals(
    broker_process: BrokerProcess,
) -> None:
    with WorkerProcess(broker_process.address, "examples.get_started.tasks", "--pool", "solo"):
        completed = subprocess.run(
            [str(PRODUCER)],
            env={"CELERIAC_BROKER": broker_process.address, "CELERIAC_TRIPS": "5"},
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr
    steps = {}
    for line in completed.stdout.splitlines():
        step = json.loads(line)
        steps[step.pop("step")] = step
    assert steps["unary"]["state"] == "TASK_STATE_SUCCESS" and steps["unary"]["result"] == 8
    assert steps["batch"]["results"] == [2, 4, 6]
    assert steps["session"]["trips"] == 5 and steps["session"]["last"] == 6
    assert steps["refusal"]["code"] == 3  # INVALID_ARGUMENT
    assert steps["refusal"]["info"]["domain"] == "celeriac.dev"
    assert steps["refusal"]["info"]["reason"] == "INVALID_NAME"
