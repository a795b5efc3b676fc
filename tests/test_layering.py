"""The dependency rules of DESIGN.md §1, checked on the source.

The broker deploys alone (never imports client or worker), its core never touches gRPC or the
generated protobuf types, and the worker never imports the broker.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT


def _imported_modules_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imported_modules(package: Path) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): _imported_modules_of(path) for path in package.rglob("*.py")
    }


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path} imports {name}"
        for path, names in _imported_modules(ROOT / package).items()
        for name in sorted(names)
        if name.split(".")[0] in forbidden or name.startswith(forbidden)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("broker", ("client", "worker")),
        ("broker/core", ("grpc", "celeriac", "google.protobuf")),
        ("worker", ("broker",)),
        ("client", ("broker", "worker")),
    ],
)
def test_package_does_not_import(package: str, forbidden: tuple[str, ...]) -> None:
    assert (ROOT / package).is_dir(), f"{package} is missing"
    assert _offenders(package, forbidden) == []


def test_the_shared_hand_written_modules_import_no_program_and_no_grpc() -> None:
    # broker, worker and client all import these (address parser, settings, CLI bits), so they
    # must depend on none of them, nor on gRPC (the broker's config has no gRPC). The pytest
    # plugin beside them is glue over all three and is not imported by any.
    forbidden = ("broker", "client", "worker", "grpc", "google", "celeriac.v1")
    offenders = [
        f"{name} imports {module}"
        for name in ("address.py", "settings.py", "cli.py")
        for module in _imported_modules_of(ROOT / "celeriac" / name)
        if module.split(".")[0] in forbidden or module.startswith(forbidden)
    ]
    assert offenders == []
