"""The gpu LoRA flow on a real Triton, around the one part this machine cannot run.

The gpu target's `llm` model set is rendered as shipped (preprocessing with the converted adapters, the ensemble
wiring of lora_weights/lora_config, postprocessing). Only `tensorrt_llm` — the tensorrtllm backend, which needs an
NVIDIA GPU — is replaced by a TEST DOUBLE (python backend, below) that keeps TensorRT-LLM's LoRA-cache contract: a
task id must arrive with its weights before it can be used, a small LRU cache evicts, and a task that is not cached
fails with TensorRT-LLM's own message. The double checks that the weights it receives are bit-for-bit the converted
adapter, and answers token ids that say which adapter ran and whether weights came with the request.

This is not a GPU result: no LoRA math runs here (the conversion's math is checked against peft in
tests/unit/test_lora.py). It tests that Triton carries the weights through the real ensemble on first use only,
and that the clients recover from an eviction by resending them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

BASE, ADAPTER, WITH_WEIGHTS = 299, 300, 310  # token ids the double answers: 300 + n; 310 when weights came
NAMES = ("alpha", "beta", "gamma")  # the adapters: the double answers 301, 302, 303 for their task ids

DOUBLE = '''
import json
import os
from collections import OrderedDict

import numpy as np
import triton_python_backend_utils as pb_utils

EVICTED = "LoRA task {} not found in cache. Please send LoRA weights with request"  # TensorRT-LLM's message
NUMBERS = __NUMBERS__  # task id -> 1, 2, 3 in NAMES' order (ids follow the names: tritonforge.builders.lora.task_id)


class TritonPythonModel:
    """TEST DOUBLE for the tensorrtllm backend's LoRA cache (see the test module's docstring)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.slots = int(config["parameters"]["lora_cache_slots"]["string_value"])
        self.lora_dir = os.path.join(args["model_repository"], args["model_version"], "lora")
        self.cache = OrderedDict()

    def execute(self, requests):
        return [self.respond(r) for r in requests]

    def respond(self, request):
        inputs = {t.name(): t.as_numpy() for t in request.inputs()}
        task = int(inputs["lora_task_id"].reshape(-1)[0]) if "lora_task_id" in inputs else None
        ids = [__BASE__]
        if task is not None:
            if "lora_weights" in inputs:
                folder = os.path.join(self.lora_dir, str(task))
                weights = np.load(os.path.join(folder, "model.lora_weights.npy"))
                config = np.load(os.path.join(folder, "model.lora_config.npy"))
                if not (np.array_equal(inputs["lora_weights"], weights) and np.array_equal(inputs["lora_config"], config)):
                    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"task {task}: weights differ"))
                self.cache[task] = True
                ids = [__ADAPTER__ + NUMBERS[task], __WITH_WEIGHTS__]
            elif task not in self.cache:
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(EVICTED.format(task)))
            else:
                ids = [__ADAPTER__ + NUMBERS[task]]
            self.cache.move_to_end(task)
            while len(self.cache) > self.slots:
                self.cache.popitem(last=False)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("output_ids", np.array([[ids]], dtype=np.int32)),
            pb_utils.Tensor("sequence_length", np.array([[len(ids)]], dtype=np.int32)),
        ])
'''
def _numbers() -> dict[int, int]:
    from tritonforge.builders.lora import task_id

    return {task_id(name): n for n, name in enumerate(NAMES, start=1)}


for _name, _value in (("__BASE__", BASE), ("__ADAPTER__", ADAPTER), ("__WITH_WEIGHTS__", WITH_WEIGHTS),
                      ("__NUMBERS__", _numbers())):
    DOUBLE = DOUBLE.replace(_name, str(_value))


def evicted(name: str) -> str:
    """TensorRT-LLM's words for an adapter that is not in its cache, by the adapter's task id."""
    from tritonforge.builders.lora import task_id

    return f"LoRA task {task_id(name)} not found in cache"


def with_double(out: Any, model: str = "tensorrt_llm", slots: int = 2) -> dict[str, Any]:
    """The files of a rendered gpu set with ``model`` (the tensorrtllm backend) replaced by the DOUBLE, a
    non-decoupled python model with a ``slots``-adapter LoRA cache (also used by tests/integration/test_llm_bls.py)."""
    from tritonforge.config_io import render_config

    trt = out.configs[model]
    trt.backend = "python"
    trt.ClearField("parameters")
    trt.ClearField("model_transaction_policy")  # the double answers from execute()
    trt.parameters["lora_cache_slots"].string_value = str(slots)
    files = dict(out.files)
    files[f"{model}/config.pbtxt"] = render_config(trt).encode()
    files[f"{model}/1/model.py"] = DOUBLE.encode()
    return files


@pytest.fixture(scope="module")
def gpu_lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from transformers import AutoTokenizer

    from tritonforge.builders.llm import llm_model_set
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora
    from tritonforge.repository import materialize
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec
    from tritonforge.validator import check_repository

    root = tmp_path_factory.mktemp("gpu-lora")
    make_tiny_decoder(root / "decoder")
    adapters = {}
    for seed, name in enumerate(NAMES, start=1):
        make_tiny_lora(root / "decoder", root / "adapters" / name, seed)
        adapters[name] = {"path": f"adapters/{name}"}
    spec = parse_spec(
        {"name": "gpu-lora", "target": "gpu", "models": {"chat": {
            "kind": "llm", "checkpoint": "decoder", "max_input_len": 64, "max_seq_len": 128, "adapters": adapters,
            "engine": {"lora": {"enabled": True, "max_rank": 8}}}}},
        source_dir=root,
    )
    out = llm_model_set("chat", spec.models["chat"], "gpu", root / "decoder")
    files = with_double(out)
    repo = root / "repo"
    repo.mkdir()
    materialize(files, repo)
    check_repository(repo)
    server = TritonServer(repo)
    server.start()
    try:
        yield server, AutoTokenizer.from_pretrained(str(root / "decoder"))
    finally:
        server.stop()


def _text(tokenizer: Any, *ids: int) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def test_weights_go_with_the_first_request_of_an_adapter_only(gpu_lora_server: tuple[Any, Any]) -> None:
    from tritonforge.clients import Client

    server, tok = gpu_lora_server
    with Client(server.endpoints.grpc) as client:
        assert client.generate("hi", adapter="alpha", max_tokens=4) == _text(tok, ADAPTER + 1, WITH_WEIGHTS)
        assert client.generate("hi", adapter="alpha", max_tokens=4) == _text(tok, ADAPTER + 1)
        assert client.generate("hi", max_tokens=4) == _text(tok, BASE)


def test_an_evicted_adapter_is_sent_again(gpu_lora_server: tuple[Any, Any]) -> None:
    import tritonclient.grpc as grpcclient

    from tritonforge.clients import AsyncClient, Client

    server, tok = gpu_lora_server
    with Client(server.endpoints.grpc) as client:
        client.generate("warm", adapter="alpha", max_tokens=4)
        # two more adapters through a 2-slot cache: alpha is evicted, but preprocessing already sent it once
        assert client.generate("hi", adapter="beta", max_tokens=4) == _text(tok, ADAPTER + 2, WITH_WEIGHTS)
        assert client.generate("hi", adapter="gamma", max_tokens=4) == _text(tok, ADAPTER + 3, WITH_WEIGHTS)

    # the upstream failure, as a raw client sees it
    raw = grpcclient.InferenceServerClient(server.endpoints.grpc)
    inputs = []
    for name, value, dtype in (("text_input", b"hi", "BYTES"), ("max_tokens", 4, "INT32"), ("lora_name", b"alpha", "BYTES")):
        tensor = grpcclient.InferInput(name, [1, 1], dtype)
        tensor.set_data_from_numpy(np.array([[value]], dtype=object if dtype == "BYTES" else np.int32))
        inputs.append(tensor)
    with pytest.raises(Exception, match=evicted("alpha")):
        raw.infer("llm", inputs)
    raw.close()

    with Client(server.endpoints.grpc) as client:  # our client resends the weights and succeeds
        assert client.generate("hi", adapter="alpha", max_tokens=4) == _text(tok, ADAPTER + 1, WITH_WEIGHTS)
        client.generate("hi", adapter="beta", max_tokens=4)
        client.generate("hi", adapter="gamma", max_tokens=4)  # alpha evicted again
    with Client(server.endpoints.http, protocol="http") as http:
        assert http.generate("hi", adapter="alpha", max_tokens=4) == _text(tok, ADAPTER + 1, WITH_WEIGHTS)

    async def evict_and_call() -> str:
        async with AsyncClient(server.endpoints.grpc) as aclient:
            await aclient.generate("hi", adapter="beta", max_tokens=4)
            await aclient.generate("hi", adapter="gamma", max_tokens=4)
            return await aclient.generate("hi", adapter="alpha", max_tokens=4)

    assert asyncio.run(evict_and_call()) == _text(tok, ADAPTER + 1, WITH_WEIGHTS)
    with Client(server.endpoints.grpc) as client:
        assert client.generate("hi", max_tokens=4) == _text(tok, BASE)  # still healthy
