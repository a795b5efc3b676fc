"""Every file of the wire contract names its generated code the same way in every language."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from celeriac.v1 import admin_pb2, client_pb2, tasks_pb2, worker_pb2

FILES = [module.DESCRIPTOR for module in (admin_pb2, client_pb2, tasks_pb2, worker_pb2)]

# What each language's generated package is called (proto/README.md says why).
EXPECTED = {
    "go_package": "celeriac.dev/gen/go/celeriac/v1;celeriacv1",
    "java_package": "dev.celeriac.v1",
    "java_multiple_files": True,
    "csharp_namespace": "Celeriac.V1",
    "objc_class_prefix": "CLX",
    "php_namespace": "Celeriac\\V1",
    "ruby_package": "Celeriac::V1",
}


@pytest.mark.parametrize("file", FILES, ids=lambda f: f.name)
def test_each_file_names_its_generated_code_for_every_language(file: object) -> None:
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)  # type: ignore[attr-defined]
    options = proto.options
    assert {name: getattr(options, name) for name in EXPECTED} == EXPECTED
    # One outer class per file, so Java sources of two files never clash.
    stem = proto.name.rsplit("/", 1)[1].removesuffix(".proto")
    assert options.java_outer_classname == f"{stem.capitalize()}Proto"
