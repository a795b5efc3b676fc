"""Prometheus metrics: a real broker with --metrics-port, a real worker, a known workload."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from celeriac.v1 import client_pb2, client_pb2_grpc, tasks_pb2
from client import Celeriac
from tests.e2e import tasks
from tests.support import BrokerProcess, WorkerProcess, run_python

METRICS_URL = r"metrics on (http://\S+/metrics)"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_counts_a_known_workload() -> None:
    add = "tests.e2e.tasks.add"
    with BrokerProcess("--metrics-port", "0") as broker:
        url = broker.wait_for_line(METRICS_URL).group(1)
        app = Celeriac("metrics-client", broker=broker.address, connect_timeout=5)
        tasks.app.conf = app.conf
        with WorkerProcess(broker.address, "tests.e2e.tasks", "--concurrency", "3"):
            assert [tasks.add.delay(i, i).get(timeout=20) for i in range(4)] == [0, 2, 4, 6]
            with pytest.raises(Exception, match="boom"):
                tasks.fail.delay("boom").get(timeout=20)
            tasks.add.apply_async((1, 1), queue="nowhere")
            tasks.add.apply_async((1, 1), queue="nowhere")
            with grpc.insecure_channel(broker.address) as channel:
                stub = client_pb2_grpc.TaskServiceStub(channel)
                with pytest.raises(grpc.RpcError):
                    stub.Submit(client_pb2.SubmitRequest(task=tasks_pb2.TaskSpec(name="")))
            samples = scrape(url)
        tasks.app.close()
        app.close()

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, tuple(sorted(labels.items())))]

    assert value("celeriac_tasks_total", name=add, outcome="succeeded") == 4
    assert value("celeriac_tasks_total", name="tests.e2e.tasks.fail", outcome="failed") == 1
    assert value("celeriac_tasks_accepted_total", name=add) == 6
    assert value("celeriac_task_runtime_seconds_count", name=add) == 4
    assert value("celeriac_task_runtime_seconds_sum", name=add) > 0
    assert value("celeriac_queue_tasks", queue="nowhere", state="ready") == 2
    assert value("celeriac_queue_tasks", queue="default", state="ready") == 0
    assert value("celeriac_workers") == 1
    assert value("celeriac_worker_slots", state="total") == 3
    assert value("celeriac_worker_slots", state="in_use") == 0
    assert value("celeriac_leases") == 0
    assert value("celeriac_refused_requests_total", reason="INVALID_NAME") == 1
    assert value("process_resident_memory_bytes") > 0


def test_metrics_are_off_by_default_and_a_taken_port_is_one_line() -> None:
    with BrokerProcess() as broker:
        busy_port = broker.address.rsplit(":", 1)[1]
        done = run_python(
            "-m", "broker", "serve", "--memory-only", "--port", "0", "--metrics-port", busy_port
        )
        broker.stop()
        assert "metrics on" not in broker.output
    assert done.returncode == 2
    assert f"error: cannot serve HTTP on 127.0.0.1:{busy_port}" in done.stderr
    assert "Traceback" not in done.stderr
