"""Many LoRA adapters on one base model, served by the `llm` ensemble (cpu target) on a real Triton.

A tiny random Llama and two tiny random PEFT adapters on it: with `adapter=` the greedy output must equal peft's
(`PeftModel` + `generate(do_sample=False)`) for that adapter, without it the base model's, also when requests for
both adapters and the base model run in the same iterations of the CPU engine.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonforge.clients import Client
from tritonforge.errors import ClientError

# the references are peft's own PeftModel: peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`,
# a FutureWarning that is peft's to fix (tritonforge's own peft calls filter exactly this one)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]
PROMPTS = ["Tell me about inference servers.", "Hi", "A much longer prompt, with several words, to make it ragged."]
ADAPTERS = ("alpha", "beta")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora

    root = tmp_path_factory.mktemp("lora_spec")
    make_tiny_decoder(root / "decoder")
    for seed, name in enumerate(ADAPTERS, start=1):
        make_tiny_lora(root / "decoder", root / "adapters" / name, seed)
    return root


@pytest.fixture(scope="module")
def lora_repo(folders: Path) -> Path:
    from tritonforge.build import build
    from tritonforge.builders.checkpoints import checkpoint_hash

    base_hash = checkpoint_hash(folders / "decoder")
    (folders / "spec.yaml").write_text(
        f"""\
name: lora-test
target: cpu
models:
  chat:
    kind: llm
    checkpoint: decoder
    max_input_len: 128
    max_seq_len: 256
    serving: {{triton_max_batch_size: 8, max_queue_delay_microseconds: 0}}
    cpu: {{max_active: 8}}
    tensorrt_llm: {{decoupled_mode: true, exclude_input_in_output: true}}
    adapters:
      alpha: {{path: adapters/alpha, base_checkpoint_sha256: {base_hash}}}
      beta: {{path: adapters/beta}}
""",
        encoding="utf-8",
    )
    repo = folders / "model_repository"
    build(folders / "spec.yaml", repo, target="cpu")
    return repo


@pytest.fixture(scope="module")
def server(lora_repo: Path) -> Iterator[object]:
    from tritonforge.server import TritonServer

    with TritonServer(lora_repo) as started:
        yield started


@pytest.fixture(scope="module")
def reference(folders: Path) -> object:
    """Greedy completions of peft on the same base and adapters (None: the plain base model)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders / "decoder")
    models: dict[str | None, object] = {None: AutoModelForCausalLM.from_pretrained(folders / "decoder").eval()}
    for name in ADAPTERS:
        base = AutoModelForCausalLM.from_pretrained(folders / "decoder")
        models[name] = PeftModel.from_pretrained(base, folders / "adapters" / name).eval()
    memo: dict[tuple[str | None, str, int], str] = {}

    def complete(adapter: str | None, prompt: str, max_tokens: int) -> str:
        key = (adapter, prompt, max_tokens)
        if key not in memo:
            ids = tok(prompt, return_tensors="pt")
            with torch.no_grad():
                out = models[adapter].generate(**ids, max_new_tokens=max_tokens, do_sample=False)
            memo[key] = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return memo[key]

    return complete


def test_the_repository_ships_the_adapters_and_their_table(lora_repo: Path) -> None:
    import json

    from tritonforge.builders.lora import task_id

    for model in ("preprocessing", "tensorrt_llm"):
        table = json.loads((lora_repo / model / "1" / "adapters.json").read_text())["adapters"]
        assert {n: e["lora_task_id"] for n, e in table.items()} == {n: task_id(n) for n in ("alpha", "beta")}
    for name in ADAPTERS:
        folder = lora_repo / "tensorrt_llm" / "1" / "adapters" / name
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("adapter", [*ADAPTERS, None])
def test_greedy_output_equals_peft_for_the_selected_adapter(server, reference, adapter: str | None) -> None:
    with Client(server.endpoints.grpc) as client:
        for prompt in PROMPTS[:2]:
            want = reference(adapter, prompt, 16)
            assert client.generate(prompt, max_tokens=16, adapter=adapter) == want
            assert "".join(client.stream(prompt, max_tokens=16, adapter=adapter)) == want
    with Client(server.endpoints.http, protocol="http") as client:
        assert client.generate(PROMPTS[0], max_tokens=16, adapter=adapter) == reference(adapter, PROMPTS[0], 16)


def test_the_adapters_really_change_the_output(reference) -> None:
    outputs = {reference(a, PROMPTS[0], 16) for a in (*ADAPTERS, None)}
    assert len(outputs) == 3


def test_concurrent_requests_with_different_adapters_each_get_their_own_output(server, reference) -> None:
    jobs = [(adapter, prompt) for prompt in PROMPTS for adapter in (*ADAPTERS, None)] * 2
    with Client(server.endpoints.grpc) as client, cf.ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(lambda job: client.generate(job[1], max_tokens=12, adapter=job[0]), jobs))
    assert got == [reference(adapter, prompt, 12) for adapter, prompt in jobs]


def test_an_unknown_adapter_gets_a_clear_error_and_the_server_stays_healthy(server, reference) -> None:
    with Client(server.endpoints.grpc, retries=0) as client:
        with pytest.raises(ClientError, match=r"unknown adapter 'gamma' \(lora_name\): known adapters are alpha, beta"):
            client.generate("hi", max_tokens=4, adapter="gamma")
        assert client.generate(PROMPTS[1], max_tokens=8, adapter="beta") == reference("beta", PROMPTS[1], 8)
    with (
        Client(server.endpoints.http, protocol="http", retries=0) as client,
        pytest.raises(ClientError, match="unknown adapter 'gamma'"),
    ):
        client.generate("hi", max_tokens=4, adapter="gamma")
    with Client(server.endpoints.grpc) as client:
        assert client.is_live() and client.is_ready() and client.is_model_ready("llm")
        assert client.generate(PROMPTS[0], max_tokens=8) == reference(None, PROMPTS[0], 8)
