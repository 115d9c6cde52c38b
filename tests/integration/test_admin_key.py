"""Triton's model-control and shared-memory APIs refuse callers without the admin key; inference stays open."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.server import ADMIN_HEADER, TritonServer

pytestmark = pytest.mark.integration
KEY = "s3cret-admin-key"


def _unload(http: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(
        f"http://{http}/v2/repository/models/add_one/unload", data=b"{}", method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_load_and_unload_need_the_key(toy_repo: Path) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with TritonServer(toy_repo, admin_key=KEY) as server:
        http, grpc = server.endpoints.http, server.endpoints.grpc
        assert _unload(http, {}) in (401, 403)
        assert _unload(http, {ADMIN_HEADER: "wrong"}) in (401, 403)
        with grpcclient.InferenceServerClient(grpc) as client:
            with pytest.raises(InferenceServerException):
                client.unload_model("add_one")
            inp = grpcclient.InferInput("INPUT", [1, 4], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 4), np.float32))
            assert client.infer("add_one", [inp]).as_numpy("OUTPUT").tolist() == [[1, 1, 1, 1]]  # inference is open
        assert server._model_ready("add_one")
        assert _unload(http, {ADMIN_HEADER: KEY}) == 200
        server.load("add_one")  # the launcher itself carries the key
        assert server._model_ready("add_one")


def _post(http: str, path: str, body: dict[str, object], headers: dict[str, str]) -> int:
    import json

    req = urllib.request.Request(
        f"http://{http}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_logging_and_trace_settings_need_the_key_over_both_protocols(toy_repo: Path) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from tritonforge.server import GRPC_ADMIN_HEADER

    with TritonServer(toy_repo, admin_key=KEY) as server:
        http, grpc = server.endpoints.http, server.endpoints.grpc
        assert _post(http, "/v2/logging", {"log_verbose_level": 1}, {}) in (401, 403)
        assert _post(http, "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}, {}) in (401, 403)
        assert _post(http, "/v2/logging", {"log_verbose_level": 0}, {ADMIN_HEADER: KEY}) == 200
        with grpcclient.InferenceServerClient(grpc) as client:
            with pytest.raises(InferenceServerException):
                client.update_log_settings({"log_verbose_level": 1})
            with pytest.raises(InferenceServerException):  # the HTTP header name is not gRPC's
                client.update_log_settings({"log_verbose_level": 1}, headers={ADMIN_HEADER: KEY})
            client.update_log_settings({"log_verbose_level": 0}, headers={GRPC_ADMIN_HEADER: KEY})
            client.unload_model("add_one", headers={GRPC_ADMIN_HEADER: KEY})
            assert not client.is_model_ready("add_one")
            assert client.is_server_live()  # health stays open


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_async_client_loads_unloads_and_reads_statistics_with_the_key(toy_repo: Path, protocol: str) -> None:
    import asyncio

    from tritonforge.clients import AsyncClient
    from tritonforge.errors import PermissionDeniedError

    async def scenario(server: TritonServer) -> None:
        url = server.endpoints.grpc if protocol == "grpc" else server.endpoints.http
        async with AsyncClient(url, protocol=protocol, retries=0) as anonymous:
            with pytest.raises(PermissionDeniedError, match="admin key"):  # a refusal, not a failure to retry
                await anonymous.unload_model("add_one")
            assert await anonymous.is_model_ready("add_one")
        async with AsyncClient(url, protocol=protocol, admin_key=KEY) as admin:
            await admin.unload_model("add_one")
            for _ in range(100):  # unloading completes after the call returns
                if not await admin.is_model_ready("add_one"):
                    break
                await asyncio.sleep(0.1)
            assert not await admin.is_model_ready("add_one")
            await admin.load_model("add_one")
            assert await admin.is_model_ready("add_one")
            out = await admin.infer("add_one", {"INPUT": np.zeros((1, 4), np.float32)})
            assert out["OUTPUT"].tolist() == [[1, 1, 1, 1]]
            for _ in range(50):  # Triton records a request's statistics just after it hands the response on
                stats = (await admin.statistics("add_one"))["model_stats"][0]
                if int(stats.get("inference_count", 0)) >= 1:
                    break
                await asyncio.sleep(0.05)
            assert stats["name"] == "add_one" and int(stats["inference_count"]) == 1

    with TritonServer(toy_repo, admin_key=KEY) as server:
        asyncio.run(scenario(server))


def test_a_server_started_from_python_guards_its_admin_apis_by_default(toy_repo: Path) -> None:
    """tritonforge.serve(repo) left model control open: any client that reached the port could unload every
    model (API audit). A key is generated unless open_admin=True says otherwise."""
    from tritonforge.errors import PermissionDeniedError, ServerError

    with TritonServer(toy_repo) as server, Client(server.endpoints.grpc) as anyone:
        assert server.admin_key
        with pytest.raises(PermissionDeniedError):
            anyone.unload_model("embed")
        assert anyone.is_model_ready("embed")
        with Client(server.endpoints.grpc, admin_key=server.admin_key) as admin:
            admin.load_model("embed")
    with pytest.raises(ServerError, match="not both"):
        TritonServer(toy_repo, admin_key="k", open_admin=True)
    assert TritonServer(toy_repo, open_admin=True).admin_key is None
