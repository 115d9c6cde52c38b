"""PEFT LoRA adapters → TensorRT-LLM's LoRA tensors, in numpy (no TensorRT-LLM needed to convert).

TensorRT-LLM's executor takes an adapter as two tensors (the layout of upstream's ``examples/hf_lora_convert.py``,
which needs a TensorRT-LLM install; this is the same arithmetic written against safetensors + numpy):

* ``lora_config`` int32 ``[1, rows, 3]``: per (layer, module) row ``[module_id, layer_idx, adapter_size]``;
* ``lora_weights`` ``[1, rows, width]``: per row ``A`` as ``[rank, in_dim]`` flattened, then ``B * scale`` as
  ``[out_dim, rank]`` flattened, zero-padded to the widest row (``scale`` = alpha / r, or alpha / sqrt(r) with
  rsLoRA). ``module_id`` comes from TensorRT-LLM's ``LoraManager.LORA_MODULE_IDS``.

Written as ``model.lora_weights.npy`` / ``model.lora_config.npy`` under ``<task_id>/``: the layout of the
tensorrtllm backend's ``lora_prefetch_dir``, and what the preprocessing step sends with a request.

``lora_weights`` must have the engine's dtype: TensorRT-LLM refuses anything else ("Expected lora weights to be the
same data type as base model", ``loraValidateRequestTensors`` in NVIDIA/TensorRT-LLM
cpp/tensorrt_llm/runtime/loraUtils.cpp @ 77d24b5fa178f11ed7fafdd9833b7245e075f721), and the backend hands the
Triton tensor over without converting it (``executor::detail::ofITensor`` in
triton_backend/inflight_batcher_llm/src/utils.cc @ c8c6df08bd0ead54cd47f7973e1e425c28a174cd). numpy has no
bfloat16: bf16 weights are stored as their raw bit pattern in a uint16 array (the bytes TensorRT-LLM's
``torch_to_numpy`` writes for bf16, which labels them with an opaque ``V2`` dtype instead).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonforge.errors import BuildError

WEIGHTS_FILE = "model.lora_weights.npy"
CONFIG_FILE = "model.lora_config.npy"

# TensorRT-LLM's LoraManager.LORA_MODULE_IDS (stable since the first LoRA release) for the HF module names of the
# Llama family (upstream's hf_modules_to_trtllm_modules)
MODULE_IDS = {"attn_qkv": 0, "attn_q": 1, "attn_k": 2, "attn_v": 3, "attn_dense": 4, "mlp_h_to_4h": 5,
              "mlp_4h_to_h": 6, "mlp_gate": 7}  # fmt: skip
HF_TO_TRTLLM = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "qkv_proj": "attn_qkv",
    "query_key_value": "attn_qkv",
    "o_proj": "attn_dense",
    "dense": "attn_dense",
    "gate_proj": "mlp_h_to_4h",
    "down_proj": "mlp_4h_to_h",
    "up_proj": "mlp_gate",
    "c_fc": "mlp_h_to_4h",
    "c_proj": "mlp_4h_to_h",
}
_KEY = re.compile(r".*\.layers\.(\d+)\.(?:self_attn|mlp|attn)\.([A-Za-z_]+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
# engine dtype -> numpy storage; bfloat16 is stored as its bit pattern (numpy has no bfloat16)
DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}


def to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even as torch's ``.to(torch.bfloat16)``."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def as_float32(weights: np.ndarray) -> np.ndarray:
    """Stored ``lora_weights`` (float16, float32 or bf16 bits) as float32."""
    return from_bf16_bits(weights) if weights.dtype == np.uint16 else weights.astype(np.float32)


@dataclass(frozen=True)
class TrtllmLora:
    weights: np.ndarray  # [1, rows, width]
    config: np.ndarray  # int32 [1, rows, 3]

    def save(self, folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / WEIGHTS_FILE, self.weights)
        np.save(folder / CONFIG_FILE, self.config)
        return {WEIGHTS_FILE: folder / WEIGHTS_FILE, CONFIG_FILE: folder / CONFIG_FILE}


def target_modules(folders: list[Path]) -> list[str]:
    """The TensorRT-LLM names of the modules these PEFT adapters adapt, read from their weights (adapter_config's
    ``target_modules`` may be a pattern such as "all-linear"); BuildError for a module TensorRT-LLM has no name for."""
    found: set[str] = set()
    for folder in folders:
        for key in _tensor_names(folder):
            if (m := _KEY.match(key)) is not None:
                found.add(_trtllm_module(folder, m.group(2)))
    return sorted(found)


def _trtllm_module(folder: Path, module: str) -> str:
    """TensorRT-LLM's name for a PEFT module; BuildError for one it has none for."""
    if module not in HF_TO_TRTLLM:
        raise BuildError(
            f"{folder}: LoRA on module '{module}' has no TensorRT-LLM equivalent (known: {', '.join(HF_TO_TRTLLM)})"
        )
    return HF_TO_TRTLLM[module]


def _tensor_names(folder: Path) -> list[str]:
    """The adapter's tensor names: a safetensors header only, else the whole .bin (torch has no index of it)."""
    safetensors_file = folder / "adapter_model.safetensors"
    if safetensors_file.is_file():
        from safetensors import safe_open

        with safe_open(str(safetensors_file), "np") as f:
            return list(f.keys())
    return list(_load_tensors(folder))


def _load_tensors(folder: Path) -> dict[str, np.ndarray]:
    safetensors_file = folder / "adapter_model.safetensors"
    if safetensors_file.is_file():
        from safetensors.numpy import load_file

        try:
            return load_file(str(safetensors_file))
        except Exception:  # bf16 has no numpy dtype: go through torch
            pass
    import torch

    if safetensors_file.is_file():
        from safetensors.torch import load_file as load_torch

        state = load_torch(str(safetensors_file))
    else:
        state = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}


def convert_adapter(folder: Path, *, dtype: str = "float16") -> TrtllmLora:
    """Convert one PEFT LoRA folder to ``dtype`` (the engine's); a BuildError names modules TensorRT-LLM cannot take."""
    if dtype not in DTYPES:
        raise BuildError(f"LoRA storage type {dtype!r} is not supported here; choose one of {', '.join(DTYPES)}")
    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    rank, alpha = int(config.get("r") or 0), float(config.get("lora_alpha") or 0)
    if rank <= 0:
        raise BuildError(f"{folder}: adapter_config.json has r={config.get('r')!r}; a LoRA rank must be >= 1")
    scale = alpha / np.sqrt(rank) if config.get("use_rslora") else alpha / rank
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise BuildError(f"{folder}: per-module rank_pattern/alpha_pattern adapters are not converted (one rank only)")

    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in _load_tensors(folder).items():
        m = _KEY.match(key)
        if m is None:
            continue  # e.g. modules_to_save heads: not LoRA tensors
        layer, module, which = int(m.group(1)), m.group(2), m.group(3)
        _trtllm_module(folder, module)
        pairs.setdefault((layer, module), {})[which] = np.asarray(value, dtype=np.float32)
    if not pairs:
        raise BuildError(
            f"{folder}: no LoRA A/B weights found (keys like '...layers.N.self_attn.q_proj.lora_A.weight')"
        )

    rows, meta = [], []
    for (layer, module), ab in sorted(pairs.items(), key=lambda kv: (kv[0][0], MODULE_IDS[HF_TO_TRTLLM[kv[0][1]]])):
        if set(ab) != {"A", "B"}:
            raise BuildError(f"{folder}: layer {layer} {module} has lora_{''.join(ab)} but not both A and B")
        a, b = ab["A"], ab["B"]  # peft: A [r, in], B [out, r]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise BuildError(f"{folder}: layer {layer} {module}: A {a.shape} / B {b.shape} do not have rank {rank}")
        rows.append(np.concatenate([a.reshape(-1), (b * scale).reshape(-1)]))
        meta.append([MODULE_IDS[HF_TO_TRTLLM[module]], layer, rank])
    width = max(r.size for r in rows)
    weights = np.zeros((1, len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        weights[0, i, : row.size] = row
    # rounded once, from float32 (as hf_lora_convert.py's `.to(dtype)`); bf16 zero padding stays 0x0000
    stored = to_bf16_bits(weights) if dtype == "bfloat16" else weights.astype(DTYPES[dtype])
    return TrtllmLora(stored, np.asarray([meta], dtype=np.int32))


def deltas(lora: TrtllmLora, shapes: dict[tuple[int, int], tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """ΔW = B·A per (layer, module_id) from the TensorRT-LLM tensors; ``shapes`` gives each (out_dim, in_dim).

    The inverse view of the layout, used to check a conversion against the adapter's own merged weights."""
    out = {}
    for row, (module_id, layer, rank) in zip(as_float32(lora.weights[0]), lora.config[0], strict=True):
        out_dim, in_dim = shapes[(int(layer), int(module_id))]
        a = row[: rank * in_dim].reshape(rank, in_dim)
        b = row[rank * in_dim : rank * in_dim + out_dim * rank].reshape(out_dim, rank)
        out[(int(layer), int(module_id))] = b @ a
    return out
