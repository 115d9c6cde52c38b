"""Probe (not a test, not in any run): would tokenization inside the ONNX graph shorten the embed path?

Issue #17 suggested moving the tokenizer into the encoder's graph with onnxruntime-extensions (whose custom-op
library Triton's onnxruntime backend can load through ``model_operations { op_library_filename }``). This measures,
on the repository's own tokenizer and model.onnx, what that could gain here. onnxruntime-extensions is not a
dependency of tritonforge; run it in a venv that has it and sees the project's packages:

    python -m venv --system-site-packages /work/venvs/ortx
    /work/venvs/ortx/bin/pip install onnxruntime-extensions==0.15.2
    /work/venvs/ortx/bin/python tests/bench/probe_ortx_tokenizer.py

It writes docs/bench/ortx_tokenizer.json: the tokenizer alone (the extensions' BertTokenizer op vs the tokenizers
library the cpu target's tokenizer step uses), the encoder with the op fused in front vs tokenizer + encoder as
two steps (batch 1, one thread, rounds alternated), and whether the extensions' batched tokenizer op
(HfJsonTokenizer, ``schema_v2``) loads this WordPiece tokenizer.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from bench_support import embed_bench  # noqa: E402

ROUNDS = 3
MEASURE_S = 3.0
FIELDS = ("input_ids", "token_type_ids", "attention_mask")


def _session(model: Any, threads: int = 1) -> Any:
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    options.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _fused(tokenizer_dir: Path, encoder_path: Path) -> tuple[Any, Any]:
    """(tokenizer graph, tokenizer + encoder graph). The BertTokenizer op takes one text (a second string is read
    as the pair's second segment, not as a second row) and returns 1-D ids, so the fused graph adds a batch axis."""
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime_extensions import gen_processing_models
    from transformers import AutoTokenizer

    pre, _ = gen_processing_models(AutoTokenizer.from_pretrained(tokenizer_dir), pre_kwargs={"CAST_TOKEN_ID": True})
    del pre.graph.output[3:]  # offset_mapping
    tokenizer_only = onnx.ModelProto()
    tokenizer_only.CopyFrom(pre)
    pre.graph.initializer.append(helper.make_tensor("batch_axis", TensorProto.INT64, [1], [0]))
    for name in FIELDS:
        pre.graph.node.append(helper.make_node("Unsqueeze", [name, "batch_axis"], [name + "_rows"]))
    del pre.graph.output[:]
    pre.graph.output.extend(helper.make_tensor_value_info(n + "_rows", TensorProto.INT64, [1, None]) for n in FIELDS)
    for opset in pre.opset_import:
        if opset.domain == "":
            opset.version = 17  # the encoder's
    encoder = onnx.load(str(encoder_path))
    fused = onnx.compose.merge_models(pre, encoder, io_map=[(n + "_rows", n) for n in FIELDS])
    return tokenizer_only, fused


def _rate(fn: Callable[[str], Any], sentences: list[str]) -> float:
    n, start = 0, time.perf_counter()
    end = start + MEASURE_S
    while time.perf_counter() < end:
        fn(sentences[n % len(sentences)])
        n += 1
    return n / (time.perf_counter() - start)


def _batched_op_status(tokenizer_dir: Path) -> str:
    from onnxruntime_extensions import gen_processing_models

    try:
        pre, _ = gen_processing_models(str(tokenizer_dir), pre_kwargs={}, schema_v2=True)
        _session(pre)
    except Exception as exc:  # recorded, not raised: this is what the probe is asking
        return f"refused: {type(exc).__name__}: {str(exc).strip()[:200]}"
    return "loads"


def main() -> None:
    import onnxruntime
    import onnxruntime_extensions
    from tokenizers import Tokenizer

    bench = embed_bench()
    sentences = bench._sentences()
    with tempfile.TemporaryDirectory() as tmp:
        repo = bench._build(Path(tmp), "embed")
        tokenizer_dir = repo / "minilm_tokenizer" / "1" / "tokenizer"
        encoder_path = repo / "minilm_encoder" / "1" / "model.onnx"
        tokenizer_graph, fused_graph = _fused(tokenizer_dir, encoder_path)
        op_tokenizer, fused, encoder = (
            _session(tokenizer_graph),
            _session(fused_graph),
            _session(encoder_path.read_bytes()),
        )
        library = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        name = fused.get_inputs()[0].name

        def two_steps(text: str) -> Any:
            ids = np.asarray([library.encode(text).ids], np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            return encoder.run(None, feeds)[0]

        def one_graph(text: str) -> Any:
            return fused.run(None, {name: np.array([text], dtype=object)})[0]

        parity = max(float(np.abs(one_graph(s) - two_steps(s)).max()) for s in sentences)
        rounds = []
        for _ in range(ROUNDS):
            rounds.append(
                {
                    "tokenizer_op_per_s": round(
                        _rate(lambda s: op_tokenizer.run(None, {name: np.array([s], dtype=object)}), sentences)
                    ),
                    "tokenizers_library_per_s": round(_rate(library.encode, sentences)),
                    "fused_graph_per_s": round(_rate(one_graph, sentences), 1),
                    "two_steps_per_s": round(_rate(two_steps, sentences), 1),
                }
            )
        result = {
            "versions": {
                "onnxruntime": onnxruntime.__version__,
                "onnxruntime_extensions": onnxruntime_extensions.__version__,
            },
            "machine": bench_machine(),
            "parity_max_abs_diff": parity,
            "batched_tokenizer_op": _batched_op_status(tokenizer_dir),
            "rounds": rounds,
            "median": {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]},
        }
    out = ROOT / "docs" / "bench" / "ortx_tokenizer.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def bench_machine() -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_targets", Path(__file__).parent / "test_embed_targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    machine: dict[str, Any] = module.machine()
    return machine


if __name__ == "__main__":
    main()
