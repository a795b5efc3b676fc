"""The broker's dependency rules, held by scanning imports, and the per-task memory target."""

from __future__ import annotations

import ast
import tracemalloc
from pathlib import Path

from broker.core.model import Payload, TaskSpec
from tests.broker.core_support import make_broker

BROKER = Path(__file__).resolve().parents[2] / "broker"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_core_imports_neither_grpc_nor_protobuf() -> None:
    for path in (BROKER / "core").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(("grpc", "celeriac", "google")), (path, name)


def test_the_broker_never_imports_client_or_worker() -> None:
    for path in BROKER.rglob("*.py"):
        for name in _imports(path):
            assert name.split(".")[0] not in {"client", "worker"}, (path, name)


def test_grpc_stays_in_the_service_layer_and_the_clis() -> None:
    # The hand-written celeriac modules (address parser, settings checks) are plain Python that
    # the configuration shares with the worker and client; the generated celeriac.v1 is not.
    allowed = {"service", "cli.py", "admin_cli.py", "control_cli.py", "testing.py"}
    for path in BROKER.rglob("*.py"):
        if path.relative_to(BROKER).parts[0] in allowed:
            continue
        for name in _imports(path):
            assert not name.startswith(("grpc", "celeriac.v1")), (path, name)


def test_a_queued_small_task_costs_under_one_kib() -> None:
    core, _ = make_broker()
    count = 5000
    args = Payload("application/json", b"[[4, 4], {}]")
    specs = [TaskSpec(name="tasks.add", args=args) for _ in range(count)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        core.submit_many(specs)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used / count < 1024, f"{used / count:.0f} bytes per queued task"
