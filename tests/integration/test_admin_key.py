"""Triton's model-control and shared-memory APIs refuse callers without the admin key; inference stays open."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

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
