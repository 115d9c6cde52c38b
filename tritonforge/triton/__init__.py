"""The one Triton access layer: every call tritonforge makes to a Triton server goes through this package.

- :mod:`~tritonforge.triton.options`: URLs, TLS, keepalive, retries, the admin key header, tritonclient's kwargs.
- :mod:`~tritonforge.triton.errors`: the one error mapping into :class:`~tritonforge.errors.TritonForgeError`.
- :mod:`~tritonforge.triton.tensors`: numpy arrays as Triton tensors and back.
- :mod:`~tritonforge.triton.streams`: generation streams (cancel, upstream stop, LoRA weight resend).
- :mod:`~tritonforge.triton.engines`: which model of a pipeline is its LLM engine (where a stop goes).
- :mod:`~tritonforge.triton.connection`: :class:`Connection` / :class:`AsyncConnection` (health, metadata, config,
  statistics, repository API, infer, streams).
- :mod:`~tritonforge.triton.http_api`: Triton's REST calls, once, for the two HTTP transports of our own:
  :mod:`~tritonforge.triton.blocking_http` (the sync client's) and :mod:`~tritonforge.triton.keepalive_http` (the
  asyncio client's and the gateway's).
- :mod:`~tritonforge.triton.load`: prepared requests for load generation (the bench).
- :mod:`~tritonforge.triton.bounded`: several requests for one, a bounded number in flight, in order.

Only modules of this package import tritonclient's transports (``tests/unit/test_layers.py`` checks it).
"""

from tritonforge.triton.connection import AsyncConnection, Connection
from tritonforge.triton.engines import ENGINE_AUTO
from tritonforge.triton.errors import classify_error, map_errors, short_message
from tritonforge.triton.options import (
    ADMIN_HEADER,
    GRPC_ADMIN_HEADER,
    ClientOptions,
    KeepAliveOptions,
    Protocol,
    RetryPolicy,
    TLSOptions,
)
from tritonforge.triton.tensors import triton_dtype

__all__ = [
    "ADMIN_HEADER",
    "ENGINE_AUTO",
    "GRPC_ADMIN_HEADER",
    "AsyncConnection",
    "ClientOptions",
    "Connection",
    "KeepAliveOptions",
    "Protocol",
    "RetryPolicy",
    "TLSOptions",
    "classify_error",
    "map_errors",
    "short_message",
    "triton_dtype",
]
