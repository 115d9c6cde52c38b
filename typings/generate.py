"""Regenerate typings/tritonclient/grpc/model_config_pb2.pyi from the installed tritonclient (see README.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from tritonclient.grpc import model_config_pb2

# protoc-gen-mypy reads a CodeGeneratorRequest on stdin: hand it the file descriptor tritonclient was built from
proto = descriptor_pb2.FileDescriptorProto.FromString(model_config_pb2.DESCRIPTOR.serialized_pb)
request = plugin_pb2.CodeGeneratorRequest(file_to_generate=[proto.name], proto_file=[proto])
result = subprocess.run(["protoc-gen-mypy"], input=request.SerializeToString(), capture_output=True, check=True)
response = plugin_pb2.CodeGeneratorResponse.FromString(result.stdout)
if response.error:
    raise SystemExit(response.error)
target = Path(__file__).parent / "tritonclient" / "grpc" / "model_config_pb2.pyi"
target.write_text(response.file[0].content)
print(f"wrote {target}")
