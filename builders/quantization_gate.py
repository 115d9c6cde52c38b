"""The gate a reduced-precision (int8, fp16, bf16) embedding model passes before it ships: what it changes for search.

Measured on an evaluation corpus (``data/evaluation_corpus.jsonl``: 300 passages written for the project, the same
as examples/data/corpus.jsonl) embedded by the fp32 and the reduced model through the shipped tokenizer:

* mean cosine similarity of each passage's two embeddings (and the minimum, reported);
* search agreement: for queries made of each third passage's first eight words, the overlap of the top-10 passages
  the reduced model's embeddings find with the top-10 fp32's find (1.0 = the same ten).

Defaults (issue #17): mean cosine >= 0.99 and top-10 overlap >= 0.9. A minimum cosine over a handful of sentences
(the gate before) refused int8 MiniLM at 0.96-0.97 while its search results agreed with fp32's 93% of the time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tritonforge.errors import BuildError

from . import onnx_common as common

GATE_VERSION = "1"  # part of a reduced-precision artifact's content hash
CORPUS = Path(__file__).resolve().parent / "data" / "evaluation_corpus.jsonl"
QUERY_WORDS = 8
TOP_K = 10
BATCH = 32
FORCED = ": accepted (force)"  # ends the note of each gate failure a build shipped with force_quantization


@dataclass(frozen=True)
class GateFigures:
    mean_cosine: float
    min_cosine: float
    search_overlap: float  # mean top-10 overlap with fp32's results
    passages: int
    queries: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluation_texts(corpus: Path = CORPUS) -> tuple[list[str], list[str]]:
    """The passages, and the queries (each third passage's first QUERY_WORDS words)."""
    passages = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    queries = [" ".join(p.split()[:QUERY_WORDS]) for p in passages[::3]]
    return passages, queries


def _embed(model: Path | Any, tokenizer_json: Path, input_names: tuple[str, ...], output: str, max_len: int,
           texts: list[str]) -> Any:
    import numpy as np
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(max_len)
    tokenizer.enable_padding()
    run = common.session(model) if isinstance(model, Path) else model  # an ONNX file, or a runner's engine
    rows = []
    for start in range(0, len(texts), BATCH):
        feeds = common.encoding_arrays(tokenizer.encode_batch(texts[start : start + BATCH]), input_names)
        (out,) = run.run([output], feeds)
        rows.append(np.asarray(out, dtype=np.float64))
    vectors = np.concatenate(rows)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-30, None)


def measure(fp32: Path | Any, reduced: Path | Any, tokenizer_json: Path, input_names: tuple[str, ...], output: str,
            max_len: int, corpus: Path = CORPUS) -> GateFigures:
    """``fp32`` and ``reduced``: ONNX files, or engines with ``run(output_names, feed)`` (the python runner's PyTorch
    engine in float32 and bfloat16, for bf16)."""
    import numpy as np

    passages, queries = evaluation_texts(corpus)
    if not passages:
        raise BuildError(f"quantization gate: {corpus} holds no passages to measure with")
    k = min(TOP_K, len(passages))  # a corpus of fewer passages: the same ten would be all of them

    def both(texts: list[str]) -> tuple[Any, Any]:
        return (_embed(fp32, tokenizer_json, input_names, output, max_len, texts),
                _embed(reduced, tokenizer_json, input_names, output, max_len, texts))

    (p32, p_red), (q32, q_red) = both(passages), both(queries)
    cosines = (p32 * p_red).sum(axis=1)
    top32 = np.argsort(-(q32 @ p32.T), axis=1)[:, :k]
    top_red = np.argsort(-(q_red @ p_red.T), axis=1)[:, :k]
    overlap = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top32, top_red, strict=True)]))
    return GateFigures(float(cosines.mean()), float(cosines.min()), overlap, len(passages), len(queries))


def gate_problems(figures: GateFigures, precision: str, min_mean_cosine: float, min_search_overlap: float) -> list[str]:
    """What keeps the reduced model from shipping (empty: it passes)."""
    problems = []
    if not figures.mean_cosine >= min_mean_cosine:
        problems.append(
            f"mean cosine to fp32 {figures.mean_cosine:.4f} < min_mean_cosine {min_mean_cosine} "
            f"({figures.passages} passages)"
        )
    if not figures.search_overlap >= min_search_overlap:
        problems.append(
            f"top-{min(TOP_K, figures.passages)} search overlap with fp32 {figures.search_overlap:.3f} < "
            f"min_search_overlap {min_search_overlap} ({figures.queries} queries)"
        )
    return [f"{precision} model: {p}" for p in problems]
