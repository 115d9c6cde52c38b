"""tritonforge: typed Triton model repositories — build, validate, serve, call.

The library is the product; the CLI maps arguments onto these calls:

    import tritonforge
    spec = tritonforge.load_spec("examples/embed.yaml")
    report = tritonforge.build(spec, "model_repository")
    tritonforge.validate("model_repository")
    with tritonforge.serve("model_repository") as server:
        print(server.grpc_url)
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from tritonforge.errors import (
    BatchTooLargeError,
    BuildError,
    ClientError,
    ContextLengthError,
    DeadlineExceededError,
    InternalServerError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    ParityError,
    PermissionDeniedError,
    Problem,
    RepositoryError,
    ServerError,
    SpecError,
    TransientError,
    TritonForgeError,
    ValidationError,
)


def _installed_version() -> str:
    """The installed distribution's version (pyproject.toml's), kept in one place: a copy here could drift from it,
    and builds record it in their lineage."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tritonforge")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__version__ = _installed_version()

__all__ = [
    "BatchTooLargeError",
    "BuildError",
    "ClientError",
    "ContextLengthError",
    "DeadlineExceededError",
    "InternalServerError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "OverloadedError",
    "ParityError",
    "PermissionDeniedError",
    "Problem",
    "RepositoryError",
    "ServerError",
    "SpecError",
    "TransientError",
    "TritonForgeError",
    "ValidationError",
    "build",
    "load_spec",
    "serve",
    "validate",
]

if TYPE_CHECKING:
    from tritonforge.build import build
    from tritonforge.server import serve
    from tritonforge.spec import load_spec
    from tritonforge.validator import validate

_LAZY = {
    "build": "tritonforge.build",
    "load_spec": "tritonforge.spec",
    "serve": "tritonforge.server",
    "validate": "tritonforge.validator",
}


def __getattr__(name: str) -> Any:
    # Keep `import tritonforge` cheap: heavy modules load on first use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


class _Package(types.ModuleType):
    """``tritonforge.build`` stays the build function once the submodule of the same name is imported: the import
    system then sets the package's attribute to the module, so a second ``tritonforge.build(...)`` (or any after
    ``from tritonforge.build import ...``) raised TypeError: 'module' object is not callable. The module itself
    is still ``sys.modules["tritonforge.build"]``, which ``from tritonforge.build import ...`` reads."""

    @property
    def build(self) -> Any:
        return __getattr__("build")

    @build.setter
    def build(self, _module: Any) -> None:
        pass  # the import system recording the submodule: the function stays


sys.modules[__name__].__class__ = _Package
