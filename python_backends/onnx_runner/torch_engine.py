"""The runner's PyTorch engine: the encoder run from its Hugging Face checkpoint instead of `model.onnx`.

Why: the `tritonserver:<yy.mm>-trtllm-python-py3` images that serve the LLM ship only the python and TensorRT-LLM
backends (no onnxruntime backend, no `onnxruntime` package), but they do ship torch (CUDA) and transformers, which
TensorRT-LLM depends on. With parameter `engine: torch` the runner serves the checkpoint in `<version>/checkpoint/`
with them, so one image serves the whole gpu repository.

The forward pass is the one tritonforge exports to ONNX (builders/onnx_encoder.py, builders/cross_encoder.py):
- `task: embedding`: last hidden state, pooled (`pooling`: mean over the attention mask, or cls), L2-normalised when
  `normalize` is "true"; output [rows, dim].
- `task: scoring`: a sequence-classification head's first logit for each (query, passage) row of
  [rows, candidates, sequence] inputs, sigmoid when `activation` is "sigmoid"; output [rows, candidates].
`precision: fp16` runs the weights in half precision on a GPU (float32 on CPU, where half is slow); `precision: bf16`
runs them in bfloat16 on CPU and GPU (the cpu target's `cpu_quantization: bf16`: native on CPUs with AMX or
AVX512-BF16, ~2.6x fp32 for all-MiniLM-L6-v2 in process on a Xeon with AMX; emulated and slow without); `fp32` (the
default) in float32. Outputs are float32 numpy arrays whatever the precision.

A batch is one padded call, the shape a GPU wants, except that the pairs of a scoring batch go through the model at
most `max_rows_per_call` (default 64) at a time: a batch of 16 queries with 512 passages each is 8192 pairs, whose
attention in one forward would want [8192, heads, width, width] activations per layer (tens of GB at width 512);
64 pairs of 512 tokens are 32k tokens, enough to fill a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_PAIRS_PER_CALL = 64
PRECISIONS = ("fp32", "fp16", "bf16")


class TorchEncoder:
    """Duck-types the part of ``onnxruntime.InferenceSession`` the runner uses: ``run(output_names, feed)``, for a
    model with one output."""

    def __init__(self, checkpoint: str, params: Mapping[str, str], device: str) -> None:
        import torch
        import transformers

        self.torch = torch
        self.task = params.get("task", "embedding")
        if self.task not in ("embedding", "scoring"):
            raise ValueError(f"parameter task must be 'embedding' or 'scoring', got {self.task!r}")
        self.pooling = params.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"parameter pooling must be 'mean' or 'cls', got {self.pooling!r}")
        self.normalize = params.get("normalize", "true") == "true"
        self.sigmoid = params.get("activation", "none") == "sigmoid"
        self.pairs_per_call = int(params.get("max_rows_per_call") or 0) or DEFAULT_PAIRS_PER_CALL
        if self.pairs_per_call < 1:
            raise ValueError(f"parameter max_rows_per_call must be >= 1, got {self.pairs_per_call}")
        self.device = torch.device(device)
        self.precision = params.get("precision", "fp32").strip() or "fp32"
        if self.precision not in PRECISIONS:
            raise ValueError(f"parameter precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.precision == "bf16":
            self.dtype = torch.bfloat16
        elif self.precision == "fp16" and self.device.type == "cuda":
            self.dtype = torch.float16
        else:
            self.dtype = torch.float32
        auto = transformers.AutoModel if self.task == "embedding" else transformers.AutoModelForSequenceClassification
        if not os.path.isfile(os.path.join(checkpoint, "config.json")):
            raise FileNotFoundError(f"no Hugging Face checkpoint (config.json) in {checkpoint}")
        # loaded in float32, then cast: `torch_dtype`/`dtype` differ between the transformers versions images ship
        model = auto.from_pretrained(checkpoint)
        self.model = model.to(self.device, dtype=self.dtype).eval()

    def run(self, output_names: Sequence[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            tensors = {
                name: torch.from_numpy(np.ascontiguousarray(value)).to(self.device) for name, value in feed.items()
            }
            if self.task == "scoring":
                rows, candidates = tensors["input_ids"].shape[:2]
                flat = {name: t.reshape(rows * candidates, -1) for name, t in tensors.items()}
                step = self.pairs_per_call
                parts = [
                    self.model(**{name: t[i : i + step] for name, t in flat.items()}, return_dict=False)[0][:, 0]
                    for i in range(0, rows * candidates, step)
                ]
                logits = torch.cat(parts).float().reshape(rows, candidates)
                out = torch.sigmoid(logits) if self.sigmoid else logits
            else:
                hidden = self.model(**tensors, return_dict=False)[0].float()
                if self.pooling == "cls":
                    out = hidden[:, 0]
                else:
                    mask = tensors["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    out = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                if self.normalize:
                    out = torch.nn.functional.normalize(out, p=2.0, dim=1)
            return [out.cpu().numpy().astype(np.float32, copy=False)]
