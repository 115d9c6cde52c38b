"""tritonforge.clients: typed Triton clients (numpy in, numpy out, tritonforge errors, bounded retries)."""

from tritonforge.clients.client import (
    AsyncClient,
    Client,
    ClientOptions,
    KeepAliveOptions,
    RetryPolicy,
    TLSOptions,
)
from tritonforge.clients.pipelines import Hit

__all__ = ["AsyncClient", "Client", "ClientOptions", "Hit", "KeepAliveOptions", "RetryPolicy", "TLSOptions"]
