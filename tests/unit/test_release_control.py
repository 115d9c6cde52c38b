"""TritonControl picks its transport from the URL's scheme (a grpc:// address was sent HTTP requests)."""

from __future__ import annotations

import pytest

from tritonforge.errors import ReleaseError
from tritonforge.releases import TritonControl


@pytest.mark.parametrize(
    ("url", "protocol"),
    [
        ("127.0.0.1:8000", "http"),
        ("http://127.0.0.1:8000", "http"),
        ("https://triton.internal:443", "http"),
        ("grpc://127.0.0.1:8001", "grpc"),
        ("GRPC://127.0.0.1:8001", "grpc"),
        ("grpcs://triton.internal:443", "grpc"),
    ],
)
def test_the_scheme_decides_the_transport(url: str, protocol: str) -> None:
    assert TritonControl(url).protocol == protocol


@pytest.mark.parametrize("url", ["ftp://h:1", "grpc://h:1/v2", "grpc://:8001", "a/b"])
def test_an_address_that_cannot_be_used_names_the_forms_allowed(url: str) -> None:
    with pytest.raises(ReleaseError, match=r"HTTP: host:port or http\(s\)://host:port; gRPC: grpc\(s\)://host:port"):
        TritonControl(url)


def test_a_grpc_control_cannot_reach_a_closed_port_and_says_where() -> None:
    with pytest.raises(ReleaseError, match=r"Triton at grpc://127\.0\.0\.1:1 is unreachable, so 'm' could not be"):
        TritonControl("grpc://127.0.0.1:1", timeout=5).load("m")
