"""Regenerate the celeriac.v1 Python package from the .proto files.

Usage: python proto/generate.py [OUTPUT_DIR]   (default: the repository root)

Writes celeriac/v1/*_pb2.py, *_pb2_grpc.py and their typed stubs (*.pyi, from mypy-protobuf).
A test runs this into a temporary folder and compares, so the committed code never drifts.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = Path("celeriac") / "v1"
INIT_TEXT = '"""Generated from proto/celeriac/v1 by `make proto`; do not edit."""\n'


def _plugin(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    return f"--plugin={name}={found}"


def generate(out_dir: Path) -> None:
    """Run protoc over every .proto file, writing the package under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        _plugin("protoc-gen-mypy"),
        _plugin("protoc-gen-mypy_grpc"),
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_dir / PACKAGE / "__init__.py").write_text(INIT_TEXT)
    for package in (out_dir / "celeriac", out_dir / PACKAGE):
        (package / "py.typed").write_text("")
    # The celeriac package also holds hand-written shared modules: its __init__ is theirs.
    parent_init = out_dir / "celeriac" / "__init__.py"
    if not parent_init.exists():
        parent_init.write_text(INIT_TEXT)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent)
