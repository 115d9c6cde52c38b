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

from typing import TYPE_CHECKING, Any

from tritonforge.errors import (
    BatchTooLargeError,
    BuildError,
    ClientError,
    DeadlineExceededError,
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

__version__ = "0.1.0"

__all__ = [
    "BatchTooLargeError",
    "BuildError",
    "ClientError",
    "DeadlineExceededError",
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
