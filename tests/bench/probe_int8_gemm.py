"""Probe (not a test, not in any run): int8 against fp32 GEMM kernels on this CPU, one thread.

Whether an int8 encoder can run 1.6x its fp32 twin depends on the CPU's int8 dot-product instructions (VNNI) more
than on the quantization recipe. This times the encoder's matrix shapes (16 x 40 tokens = 640 rows; 64 rows) with:
ONNX Runtime fp32 `MatMul`, int8 `MatMulInteger` (u8 x s8 on pre-quantized inputs: the kernel alone), the shipped
recipe's dynamic quantization (`quantize_dynamic`, per-channel QInt8: `DynamicQuantizeMatMul`), and torch's fp32
`Linear` against its dynamic int8 `Linear` on every quantized engine torch offers here.

    python tests/bench/probe_int8_gemm.py        # ~1 min; writes docs/bench/int8_gemm.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ((640, 384, 1536), (640, 1536, 384), (640, 384, 384), (64, 384, 1536))  # rows x in x out
SECONDS = 1.5


def _time(fn: Callable[[], Any]) -> float:
    """Milliseconds per call, after two warm-up calls."""
    fn()
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < SECONDS:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n * 1e3


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _graph(op: str, a_type: int, out_type: int, k: int, initializers: list[Any], extra_inputs: list[str]) -> Any:
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node(op, ["a", "w", *extra_inputs], ["y"])], "g",
        [helper.make_tensor_value_info("a", a_type, [None, k])], [helper.make_tensor_value_info("y", out_type, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main() -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, float]] = {}
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32) * 0.05
        fp32 = _graph("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, k, [numpy_helper.from_array(w, "w")], [])
        s32 = _session(fp32.SerializeToString())
        w8 = np.clip(np.round(w / (np.abs(w).max() / 127)), -127, 127).astype(np.int8)
        a8 = rng.integers(0, 255, (m, k), dtype=np.uint8)
        int8 = _graph("MatMulInteger", TensorProto.UINT8, TensorProto.INT32, k,
                      [numpy_helper.from_array(w8, "w"), numpy_helper.from_array(np.array(128, np.uint8), "zero")],
                      ["zero"])
        s8 = _session(int8.SerializeToString())
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(fp32, f"{tmp}/fp32.onnx")
            quantize_dynamic(f"{tmp}/fp32.onnx", f"{tmp}/int8.onnx", weight_type=QuantType.QInt8, per_channel=True)
            sdyn = _session(Path(f"{tmp}/int8.onnx").read_bytes())
        row = {
            "ort_fp32_matmul_ms": _time(partial(s32.run, None, {"a": a})),
            "ort_int8_matmulinteger_ms": _time(partial(s8.run, None, {"a": a8})),
            "ort_dynamic_int8_ms": _time(partial(sdyn.run, None, {"a": a})),
        }
        linear = torch.nn.Linear(k, n, bias=False)
        linear.weight.data = torch.from_numpy(np.ascontiguousarray(w.T))
        x = torch.from_numpy(a)
        with torch.inference_mode():
            row["torch_fp32_linear_ms"] = _time(partial(linear, x))
            for engine in torch.backends.quantized.supported_engines:
                if engine in ("none", "qnnpack"):  # qnnpack is the ARM/mobile engine
                    continue
                torch.backends.quantized.engine = engine
                quantized = torch.ao.quantization.quantize_dynamic(
                    torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8
                )
                row[f"torch_dynamic_int8_{engine}_ms"] = _time(partial(quantized, x))
        row = {key: round(value, 3) for key, value in row.items()}
        row["ort_int8_kernel_vs_fp32"] = round(row["ort_fp32_matmul_ms"] / row["ort_int8_matmulinteger_ms"], 2)
        row["ort_dynamic_int8_vs_fp32"] = round(row["ort_fp32_matmul_ms"] / row["ort_dynamic_int8_ms"], 2)
        rows[f"{m}x{k}x{n}"] = row
        print(f"{m}x{k}x{n}: {row}", flush=True)

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from probe_call_plan import _targets_bench

    result = {
        "command": "python tests/bench/probe_int8_gemm.py",
        "machine": _targets_bench().machine(),
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        "threads": 1,
        "shapes_rows_x_in_x_out": rows,
    }
    (ROOT / "docs" / "bench" / "int8_gemm.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
