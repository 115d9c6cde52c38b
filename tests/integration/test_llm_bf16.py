"""`cpu: {weights: bf16}` served by the `llm` ensemble (cpu target) on a real Triton, with a LoRA adapter.

A tiny random Llama (and a tiny random PEFT adapter on it) built with bf16 weights: over gRPC, greedy output must
equal transformers' generate() on the checkpoint loaded in bfloat16 (peft's on that bf16 base for the adapter), and
is compared with the fp32 model's. The tiny model's logits are nearly flat (top-2 gaps down to ~0.02), so a
near-tie flips under bf16 rounding (here one prompt: 6 of 8 completions equal fp32's); the real SmolLM2's
agreement is in docs/llm.md (tests/bench/probe_llm_bf16.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tritonforge.clients import Client

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]
PROMPTS = ["Tell me about inference servers.", "Hi", "Hello world", "The quick brown fox jumps over the lazy dog."]
TOKENS = 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora

    root = tmp_path_factory.mktemp("llm_bf16")
    make_tiny_decoder(root / "decoder")
    make_tiny_lora(root / "decoder", root / "adapters" / "alpha", 1)
    (root / "spec.yaml").write_text(
        """\
name: bf16-test
target: cpu
models:
  chat:
    kind: llm
    checkpoint: decoder
    max_input_len: 128
    max_seq_len: 256
    serving: {triton_max_batch_size: 8, max_queue_delay_microseconds: 0}
    cpu: {max_active: 8, weights: bf16}
    tensorrt_llm: {decoupled_mode: true, exclude_input_in_output: true}
    adapters:
      alpha: {path: adapters/alpha}
""",
        encoding="utf-8",
    )
    return root


@pytest.fixture(scope="module")
def server(folders: Path) -> Iterator[Any]:
    from tritonforge.build import build
    from tritonforge.server import TritonServer

    repo = folders / "model_repository"
    build(folders / "spec.yaml", repo, target="cpu")
    with TritonServer(repo) as started:
        yield started


@pytest.fixture(scope="module")
def reference(folders: Path) -> Any:
    """Greedy completions in-process: (dtype, adapter or None, prompt) -> text."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders / "decoder")
    models = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        base = AutoModelForCausalLM.from_pretrained(folders / "decoder", dtype=dtype).eval()
        models[name] = PeftModel.from_pretrained(base, str(folders / "adapters" / "alpha")).eval()

    def complete(dtype: str, adapter: str | None, prompt: str) -> str:
        ids = tok(prompt, return_tensors="pt")
        model = models[dtype]
        with torch.no_grad():
            if adapter is None:
                with model.disable_adapter():
                    out = model.generate(**ids, max_new_tokens=TOKENS, do_sample=False)
            else:
                out = model.generate(**ids, max_new_tokens=TOKENS, do_sample=False)
        return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    return complete


def test_bf16_weights_are_served_as_transformers_runs_them_in_bf16_and_near_fp32(server: Any, reference: Any) -> None:
    served = {}
    with Client(server.endpoints.grpc) as client:
        for prompt in PROMPTS:
            for adapter in (None, "alpha"):
                served[adapter, prompt] = client.generate(prompt, max_tokens=TOKENS, adapter=adapter)
    for (adapter, prompt), text in served.items():
        assert text == reference("bf16", adapter, prompt), (adapter, prompt)
    same_as_fp32 = sum(text == reference("fp32", adapter, prompt) for (adapter, prompt), text in served.items())
    assert same_as_fp32 >= len(served) - 2, (same_as_fp32, len(served))
    assert served["alpha", PROMPTS[0]] != served[None, PROMPTS[0]]  # the adapter is applied on the bf16 base


def test_the_engine_log_names_bf16(server: Any) -> None:
    assert "on CPU, bf16;" in server.log_text()
