"""The shape of the code (ARCHITECTURE.md): one module family reaches Triton, layers point down, one error tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("tritonforge", "builders", "ensembles", "clients", "deploy", "gateway")
ACCESS_LAYER = ROOT / "tritonforge" / "triton"
# tritonclient also ships Triton's protobuf messages: reading a ModelConfig is not reaching a server
NOT_TRANSPORT = ("tritonclient.grpc.model_config_pb2",)


def _modules() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_only_the_access_layer_imports_tritonclients_transports() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in _modules()
        if ACCESS_LAYER not in path.parents
        for name in _imports(path)
        if name.startswith("tritonclient") and not name.startswith(NOT_TRANSPORT)
    }
    assert not offenders, "tritonclient transports outside tritonforge/triton:\n" + "\n".join(sorted(offenders))


def test_the_access_layer_imports_nothing_above_it() -> None:
    above = ("tritonforge.clients", "tritonforge.bench", "tritonforge.server", "tritonforge.releases",
             "tritonforge.cli", "tritonforge.gateway", "tritonforge.builders", "tritonforge.spec")
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in ACCESS_LAYER.rglob("*.py")
        for name in _imports(path)
        if name.startswith(above)
    }
    assert not offenders, "\n".join(sorted(offenders))


@pytest.mark.parametrize("package", ["tritonforge.clients", "tritonforge.triton"])
def test_importing_the_client_library_stays_light(package: str) -> None:
    heavy = ("starlette", "torch", "onnxruntime", "transformers", "tritonclient")
    code = f"import sys, {package}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not loaded & set(heavy), f"importing {package} loads {sorted(loaded & set(heavy))}"


def test_every_exception_class_derives_from_tritonforge_error() -> None:
    import importlib

    from tritonforge.errors import TritonForgeError

    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception")) for b in node.bases
            ):
                found.append((path, node.name))
    assert found
    for path, name in found:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for folder in SOURCES[1:]:
            if module.startswith(folder + "."):
                module = "tritonforge." + module
        cls = getattr(importlib.import_module(module.removesuffix(".__init__")), name)
        assert issubclass(cls, TritonForgeError), f"{module}.{name} is not a TritonForgeError"


PUBLIC = {  # the public surface; changing it is a decision, not a side effect of moving code
    "tritonforge": [
        "BatchTooLargeError", "BuildError", "ClientError", "ContextLengthError", "DeadlineExceededError",
        "InternalServerError", "InvalidInputError", "ModelNotFoundError", "ModelNotReadyError", "OverloadedError",
        "ParityError", "PermissionDeniedError",
        "Problem", "RepositoryError", "ServerError", "SpecError", "TransientError", "TritonForgeError",
        "ValidationError", "build", "load_spec", "serve", "validate",
    ],
    "tritonforge.clients": [
        "AsyncClient", "Client", "ClientOptions", "Hit", "KeepAliveOptions", "RetryPolicy", "TLSOptions",
    ],
    "tritonforge.triton": [
        "ADMIN_HEADER", "ENGINE_AUTO", "GRPC_ADMIN_HEADER", "AsyncConnection", "ClientOptions", "Connection", "KeepAliveOptions",
        "Protocol", "RetryPolicy", "TLSOptions", "classify_error", "map_errors", "short_message", "triton_dtype",
    ],
    "tritonforge.gateway": [
        "APIError", "GatewayLimits", "GatewayModels", "create_app", "flatten_messages", "split_problems",
    ],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_the_public_names_are_pinned(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(PUBLIC[package])
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name} does not resolve"


SPEC_LEVEL = ["tritonforge/spec.py", "tritonforge/spec_base.py", "tritonforge/spec_deploy.py", "tritonforge/naming.py",
              "tritonforge/build_manifest.py",  # what a build records, read by deploy and serve without the builders
               "tritonforge/errors.py", "tritonforge/config_io.py",
              "tritonforge/rate_limit.py",  # the spec's deploy section and the validator share its RateLimit
              "tritonforge/values.py",  # is_whole: every layer's whole-number arguments
              "tritonforge/file_hash.py",  # file_sha256: builders, deploy and releases fingerprint files
              "tritonforge/yaml_text.py",  # the spec's and the split files' YAML reading
              *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tritonforge" / "trtllm").glob("*.py"))]


@pytest.mark.parametrize("module", SPEC_LEVEL)
def test_the_spec_level_imports_no_builder_and_nothing_above_it(module: str) -> None:
    above = ("tritonforge.builders", "tritonforge.ensembles", "tritonforge.build", "tritonforge.server",
             "tritonforge.clients", "tritonforge.gateway", "tritonforge.bench", "tritonforge.deploy", "tritonforge.cli")
    offenders = [name for name in _imports(ROOT / module) if any(name == a or name.startswith(f"{a}.") for a in above)]
    assert not offenders, f"{module} imports {offenders}"


MAX_LINES = 800


def test_no_module_is_longer_than_one_sitting() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for folder in (*SOURCES, "python_backends")
        for p in (ROOT / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"
