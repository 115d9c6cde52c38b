"""Triton python-backend model: nearest passages of a query embedding in a FAISS index (tritonforge).

Input  QUERY_EMBEDDING  TYPE_FP32   [dim]  one query embedding per batch item (from the same encoder as the index)
       TOP_K            TYPE_INT32  [1]    optional, passages wanted per item (default: parameter default_top_k)
Output DOC_IDS          TYPE_STRING [-1]   passage ids, best first
       SCORES           TYPE_FP32   [-1]   inner products (= cosine similarity for normalised embeddings)
       DOCUMENTS        TYPE_STRING [-1]   passage texts, aligned with DOC_IDS

Files read from the version folder: ``index.faiss``, ``docstore.jsonl`` (line i = index label i) and
``manifest.json``, as written by tritonforge's index builder.

Parameters (config.pbtxt, string values):
  embedder_hash    REQUIRED. Must equal the manifest's embedder_hash, otherwise the model refuses to load: an
                   index built by a different embedder must never be served (its vectors live in another space).
  default_top_k    k for items sent without TOP_K (default 5).
  max_top_k        upper bound on k (default 100).
  nprobe           ivf indexes: inverted lists visited per query (default: the manifest's value).
  ef_search        hnsw indexes: candidate list size while searching (default: the manifest's value).
  faiss_threads    OpenMP threads for search (default: half the cores shared between this model's instances,
                   at most 4, at least 1 — the encoder in the same pipeline needs the other half).

TOP_K rules, per batch item: missing -> default_top_k; <= 0 -> error to that request ("TOP_K must be >= 1,
got 0"); then clamped to max_top_k and to the number of passages in the index. A TOP_K of one value for a
request of several items applies to all of them.

Shape of a response: outputs must be rectangular, so a request of n items answers [n, k] where k is the LARGEST
k of its items. An item that asked for fewer keeps exactly its own k results, and its remaining slots are padding:
DOC_IDS "" (never a real id: ids are non-empty), DOCUMENTS "" and SCORES NaN. The same padding marks slots an
approximate index (ivf with a small nprobe) could not fill. Clients stop at the first "" id.

All queries of all requests in one execute() go through ONE index.search call with the largest k of the batch,
then are cut per item (for flat and ivf indexes the top-k is a prefix of the top-K; hnsw searches with
max(ef_search, K) candidates, so a larger batch-wide K can only improve an item's results). Query vectors are
searched as sent: inner-product ranking does not change when a query is scaled, so no re-normalisation is done.

Bad input (missing input, wrong dim, non-finite values, bad TOP_K) is answered with an error to that request
only; the other requests of the batch are served.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

import numpy as np
import triton_python_backend_utils as pb_utils

INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.jsonl"
MANIFEST_FILE = "manifest.json"


def _int_param(params: dict[str, Any], name: str, default: int, low: int = 1) -> int:
    raw = params.get(name, "")
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"retriever parameter {name} must be an integer >= {low}, got {raw!r}") from None
    if value < low:
        raise ValueError(f"retriever parameter {name} must be an integer >= {low}, got {value}")
    return value


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import faiss

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])

        manifest_path = os.path.join(here, MANIFEST_FILE)
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        expected = (params.get("embedder_hash") or "").strip()
        if not expected:
            raise ValueError(
                "retriever parameter embedder_hash is required: set it to the hash of the encoder served with this "
                f"index (the index at {here} was built by embedder {manifest.get('embedder_hash')!r})"
            )
        if manifest.get("embedder_hash") != expected:
            raise ValueError(
                f"refusing to serve the index at {here}: it was built by embedder {manifest.get('embedder_hash')!r} "
                f"({MANIFEST_FILE}) but config.pbtxt parameter embedder_hash is {expected!r}; an index built by a "
                "different embedder must not be served: rebuild the index with the served encoder"
            )
        if manifest.get("metric") != "inner_product":
            raise ValueError(f"{manifest_path}: metric {manifest.get('metric')!r} is not supported (inner_product)")
        self.dim = int(manifest["dim"])

        for tensor in config.get("input", []):
            if tensor.get("name") == "QUERY_EMBEDDING":
                dims = [int(d) for d in tensor.get("dims", [])]
                if dims and dims != [-1] and dims != [self.dim]:
                    raise ValueError(
                        f"config.pbtxt declares QUERY_EMBEDDING dims {dims} but the index at {here} has dim {self.dim}"
                    )

        instances = sum(max(1, int(g.get("count", 1))) for g in config.get("instance_group", [])) or 1
        default_threads = max(1, min(4, _load_sibling("cores").available_cores() // (2 * instances)))
        faiss.omp_set_num_threads(_int_param(params, "faiss_threads", default_threads))

        self.index: Any = faiss.read_index(os.path.join(here, INDEX_FILE))
        if self.index.d != self.dim:
            raise ValueError(f"{here}: {INDEX_FILE} has dim {self.index.d} but {MANIFEST_FILE} says {self.dim}")
        if self.index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{here}: {INDEX_FILE} does not use the inner-product metric")
        index_type = manifest.get("index_type", "flat")
        parameters = manifest.get("parameters", {})
        if index_type == "ivf":
            nprobe = _int_param(params, "nprobe", int(parameters.get("nprobe", 8)))
            faiss.extract_index_ivf(self.index).nprobe = nprobe
        elif index_type == "hnsw":
            # faiss' stubs type read_index as Index; it returns the index's own class, an IndexHNSW* here
            self.index.hnsw.efSearch = _int_param(  # type: ignore[attr-defined]
                params, "ef_search", int(parameters.get("ef_search", 64))
            )

        ids, texts = [], []
        with open(os.path.join(here, DOCSTORE_FILE), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    doc = json.loads(line)
                    ids.append(doc["id"].encode("utf-8"))
                    texts.append(doc["text"].encode("utf-8"))
        self.count = len(ids)
        if not (self.count == self.index.ntotal == int(manifest["count"])):
            raise ValueError(
                f"{here}: {DOCSTORE_FILE} holds {self.count} passages, {INDEX_FILE} {self.index.ntotal} vectors and "
                f"{MANIFEST_FILE} says {manifest['count']}: the files do not belong together"
            )
        if self.count == 0:
            raise ValueError(f"{here}: the index is empty")
        # one extra trailing entry: label -1 (an unfilled slot) indexes it and reads as padding
        self.ids = np.array([*ids, b""], dtype=np.object_)
        self.texts = np.array([*texts, b""], dtype=np.object_)

        self.max_top_k = _int_param(params, "max_top_k", 100)
        self.default_top_k = _int_param(params, "default_top_k", min(5, self.max_top_k))
        if self.default_top_k > self.max_top_k:
            raise ValueError(
                f"retriever parameter default_top_k ({self.default_top_k}) is larger than max_top_k ({self.max_top_k})"
            )

    def _read(self, request: Any) -> tuple[tuple[np.ndarray, np.ndarray] | None, str | None]:
        """One request's queries and per-item k; returns ((queries, ks), None) or (None, error message)."""
        tensor = pb_utils.get_input_tensor_by_name(request, "QUERY_EMBEDDING")
        if tensor is None:
            return None, f"missing input 'QUERY_EMBEDDING' (TYPE_FP32, [batch, {self.dim}])"
        queries = tensor.as_numpy()
        if queries.ndim != 2 or queries.shape[0] == 0 or queries.shape[1] != self.dim:
            return None, (
                f"QUERY_EMBEDDING must have shape [batch, {self.dim}] (the index's dim), got {list(queries.shape)}"
            )
        queries = queries.astype(np.float32, copy=False)
        if not np.isfinite(queries).all():
            return None, "QUERY_EMBEDDING holds NaN or infinite values"
        n = queries.shape[0]

        top_k = pb_utils.get_input_tensor_by_name(request, "TOP_K")
        if top_k is None:
            ks = np.full(n, self.default_top_k, dtype=np.int64)
        else:
            ks = top_k.as_numpy().reshape(-1).astype(np.int64)
            if ks.size == 1:
                ks = np.repeat(ks, n)
            elif ks.size != n:
                return None, f"TOP_K must hold one value per query ({n}) or one for all, got {ks.size}"
            bad = np.flatnonzero(ks < 1)
            if bad.size:
                return None, f"TOP_K must be >= 1, got {int(ks[bad[0]])}"
        ks = np.minimum(ks, min(self.max_top_k, self.count))
        return (queries, ks), None

    def execute(self, requests: list[Any]) -> list[Any]:
        read = [self._read(r) for r in requests]
        # _read returns (queries, ks) with no error, None with one
        good = cast("list[tuple[np.ndarray, np.ndarray]]", [item for item, error in read if error is None])
        if good:
            queries = np.ascontiguousarray(np.concatenate([q for q, _ in good]) if len(good) > 1 else good[0][0])
            k = int(max(int(ks.max()) for _, ks in good))
            scores, labels = self.index.search(queries, k)
        responses, row = [], 0
        for item, error in read:
            if error is not None:
                err = pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
                continue
            q, ks = cast("tuple[np.ndarray, np.ndarray]", item)  # no error: (queries, ks)
            n, width = q.shape[0], int(ks.max())
            lab = labels[row : row + n, :width].copy()
            sco = scores[row : row + n, :width].astype(np.float32, copy=True)
            row += n
            pad = (np.arange(width)[None, :] >= ks[:, None]) | (lab < 0)
            lab[pad] = -1
            sco[pad] = np.nan
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("DOC_IDS", np.ascontiguousarray(self.ids[lab])),
                        pb_utils.Tensor("SCORES", np.ascontiguousarray(sco)),
                        pb_utils.Tensor("DOCUMENTS", np.ascontiguousarray(self.texts[lab])),
                    ]
                )
            )
        return responses

    def finalize(self) -> None:
        self.index = None


def _load_sibling(name: str) -> Any:
    """A module shipped next to this model.py (cores.py), loaded by path: this folder is copied alone into a
    repository, and no other model's module of that name may be picked up from sys.path."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
