"""The benchmark's target: a loopback address unless the caller says it may load a remote server."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tritonforge.errors import BenchOptionsError, ClientError
from tritonforge.triton.options import DEFAULT_PORTS, Protocol, host_of, is_loopback, split_url

MAX_CONCURRENCY = 1024


def default_url(protocol: Protocol = "grpc") -> str:
    return f"localhost:{DEFAULT_PORTS[protocol]}"


def check_target(url: str, *, protocol: Protocol = "grpc", allow_remote: bool = False) -> str:
    """``host:port`` of ``url``; a BenchOptionsError for a non-loopback address unless ``allow_remote``."""
    try:
        address, secure = split_url(url, protocol)
    except ClientError as err:
        # the library's message says protocol='http'; on the command line the same choice is --protocol http
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        other = "http" if scheme in ("http", "https") else "grpc" if scheme in ("grpc", "grpcs") else ""
        hint = f" (on the command line: --protocol {other})" if other and other != protocol else ""
        raise BenchOptionsError(f"{err}{hint}") from None
    if secure:
        raise BenchOptionsError(f"url {url!r}: TLS is not supported by the benchmark (use grpc:// or http://)")
    if not allow_remote and not is_loopback(host_of(address)):
        raise BenchOptionsError(
            f"refusing to benchmark {address}: it is not a loopback address and a benchmark sends real load. "
            "Pass --allow-remote (allow_remote=True) to load a server you are allowed to load."
        )
    return address


def parse_concurrency(value: str | int | Iterable[int]) -> list[int]:
    """``"1,4,16"`` (or ints) -> ``[1, 4, 16]``, each within 1..MAX_CONCURRENCY."""
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    out = []
    for item in items:
        try:
            n = int(item)
        except (TypeError, ValueError):
            raise BenchOptionsError(f"concurrency {item!r} is not an integer (give e.g. 1,4,16)") from None
        if not 1 <= n <= MAX_CONCURRENCY:
            raise BenchOptionsError(f"concurrency {n} must be within 1..{MAX_CONCURRENCY}")
        out.append(n)
    if not out:
        raise BenchOptionsError("concurrency is empty: give at least one level, e.g. 1,4,16")
    return out


