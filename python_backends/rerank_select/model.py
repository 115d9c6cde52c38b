"""Triton python-backend model: order retrieved candidates by reranker score and keep the best TOP_N (tritonforge).

Input  CANDIDATE_IDS        TYPE_STRING [-1]  retrieved ids per query ("" marks padding from the retriever)
       CANDIDATE_DOCUMENTS  TYPE_STRING [-1]  their texts
       RERANK_SCORES        TYPE_FP32   [-1]  cross-encoder score per candidate
       TOP_N                TYPE_INT32  [1]   optional, results wanted per query (default: parameter default_top_n)
Output DOC_IDS              TYPE_STRING [-1]  best first
       SCORES               TYPE_FP32   [-1]  reranker scores
       DOCUMENTS            TYPE_STRING [-1]

Padding candidates ("" id) are dropped before sorting, so their scores never matter. A request of n queries
answers [n, k] with k the largest number kept for any of its queries; shorter rows are padded with "" ids,
"" documents and NaN scores, exactly like the retriever's output.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.default_top_n = int(params.get("default_top_n") or 3)

    def _one(self, request: Any) -> list[Any]:
        def get(name: str) -> np.ndarray | None:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        ids, docs, scores = get("CANDIDATE_IDS"), get("CANDIDATE_DOCUMENTS"), get("RERANK_SCORES")
        if ids is None or docs is None or scores is None:
            raise ValueError("CANDIDATE_IDS, CANDIDATE_DOCUMENTS and RERANK_SCORES are required")
        if not (ids.shape == docs.shape == scores.shape) or ids.ndim != 2:
            raise ValueError(f"candidate shapes differ: ids {ids.shape}, documents {docs.shape}, scores {scores.shape}")
        top_n = get("TOP_N")
        wanted = (
            np.full(ids.shape[0], self.default_top_n)
            if top_n is None
            else np.broadcast_to(top_n.reshape(-1), (ids.shape[0],))
        )
        if (wanted <= 0).any():
            raise ValueError(f"TOP_N must be >= 1, got {int(wanted.min())}")
        rows = []
        for i in range(ids.shape[0]):
            real = [j for j in range(ids.shape[1]) if ids[i, j] not in (b"", "")]
            if any(np.isnan(float(scores[i, j])) for j in real):  # NaN compares false: the order came out wrong
                raise ValueError(f"RERANK_SCORES[{i}] holds NaN: scores must be numbers")
            real.sort(key=lambda j: -float(scores[i, j]))
            rows.append(real[: int(wanted[i])])
        width = max((len(r) for r in rows), default=0)
        out_ids = np.full((ids.shape[0], width), b"", dtype=object)
        out_docs = np.full((ids.shape[0], width), b"", dtype=object)
        out_scores = np.full((ids.shape[0], width), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            for slot, j in enumerate(row):
                out_ids[i, slot], out_docs[i, slot], out_scores[i, slot] = ids[i, j], docs[i, j], scores[i, j]
        return [
            pb_utils.Tensor("DOC_IDS", out_ids),
            pb_utils.Tensor("SCORES", out_scores),
            pb_utils.Tensor("DOCUMENTS", out_docs),
        ]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._one(request)))
            except ValueError as err:
                error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
