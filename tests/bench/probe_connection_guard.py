"""Probe (not a test, not in any run): what the gateway's connection guard adds to parsing a request.

Feeds the same request (an embeddings POST with the headers an HTTP client sends, 120 body bytes), in one read, to
uvicorn's httptools protocol and to gateway/connection_guard.py's GuardedProtocol, 2000 connections a round, 15
alternating rounds on uvloop, and prints the median and minimum microseconds per request of each. What is timed is
`data_received`: parsing, the guard's bookkeeping, and starting the request's ASGI task (the app does nothing).

    python tests/bench/probe_connection_guard.py        # ~10 s
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tritonforge.gateway.connection_guard import GuardedProtocol

REQUEST = (b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: python-httpx/0.28\r\n"
           b"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nAuthorization: Bearer k\r\n"
           b"Content-Type: application/json\r\nContent-Length: 120\r\n\r\n" + b"x" * 120)
CONNECTIONS, ROUNDS = 2000, 15


class _Transport(asyncio.Transport):
    """A socket's transport as the protocol uses it, writing nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 9000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def write(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


async def _rounds() -> dict[str, list[float]]:
    config = uvicorn.Config(_app, log_level="critical")
    config.load()
    state = ServerState()
    times: dict[str, list[float]] = {}
    for cls in (HttpToolsProtocol, GuardedProtocol) * ROUNDS:
        protocols = [cls(config=config, server_state=state, app_state={}) for _ in range(CONNECTIONS)]  # type: ignore[arg-type]
        for protocol in protocols:
            protocol.connection_made(_Transport())
        began = time.perf_counter()
        for protocol in protocols:
            protocol.data_received(REQUEST)
        times.setdefault(cls.__name__, []).append((time.perf_counter() - began) / CONNECTIONS * 1e6)
        await asyncio.sleep(0.1)  # the requests' tasks run (and end) here, outside the timing
    return times


def main() -> None:
    for name, micros in uvloop.run(_rounds()).items():
        print(f"{name}: median {statistics.median(micros):.2f} us, min {min(micros):.2f} us per request")


if __name__ == "__main__":
    main()
