"""Build a FAISS retrieval index from passages and their embeddings, cached by content hash.

Inner product is the only metric: the encoder's embeddings are L2-normalised, so inner product = cosine.

Index types (``IndexSettings.type``):

* ``flat`` (default): ``IndexFlatIP``, exact search.
* ``ivf``: ``IndexIVFFlat`` with an inner-product flat quantizer and ``METRIC_INNER_PRODUCT``, trained on the
  embeddings themselves; ``nlist`` defaults to ``round(4 * sqrt(n))`` and is clamped to ``[1, n]``; ``nprobe`` (clamped
  to ``nlist``) is recorded in the manifest and applied by the retriever.
* ``hnsw``: ``IndexHNSWFlat(dim, hnsw_m, METRIC_INNER_PRODUCT)`` built with ``ef_construction``; ``ef_search`` is
  recorded in the manifest and applied by the retriever.

An artifact is the folder ``<cache>/index/<content_hash>/`` holding

* ``index.faiss``    written with ``faiss.write_index``; label ``i`` is line ``i`` of the docstore;
* ``docstore.jsonl`` ``{"id", "text", "metadata"}`` per passage, in index order;
* ``manifest.json``  embedder_hash, dim, metric, count, index type and parameters, faiss version, content_hash.

``content_hash`` = sha256 over the builder version, ``embedder_hash``, the settings and every passage (id, text,
metadata), so it can be computed before anything is embedded (``index_content_hash`` / ``find_cached_index``: a
caller may skip embedding on a cache hit). The folder is built in a temporary folder next to it and renamed into
place, so a failed or interrupted build leaves nothing half-written; a complete folder is reused.

faiss is imported inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonforge.builders.artifact_cache import cached_build
from tritonforge.errors import BuildError
from tritonforge.values import is_whole

from .checkpoints import default_cache_dir
from .corpus import Passage, id_problem

BUILDER_VERSION = "1"  # part of every content hash: bump it when the index recipe or the file layout changes
FORMAT = "tritonforge-index"
METRIC = "inner_product"
INDEX_TYPES = ("flat", "ivf", "hnsw")
INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.jsonl"
MANIFEST_FILE = "manifest.json"
FILES = (INDEX_FILE, DOCSTORE_FILE, MANIFEST_FILE)
NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class IndexSettings:
    type: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: int | None = None  # ivf: number of inverted lists (None = round(4 * sqrt(n)), clamped to n)
    nprobe: int = 8  # ivf: lists visited per query (served default)
    hnsw_m: int = 32  # hnsw: neighbours per node
    ef_search: int = 64  # hnsw: candidate list size while searching (served default)
    ef_construction: int = 80  # hnsw: candidate list size while building

    def __post_init__(self) -> None:
        for name in ("nlist", "nprobe", "hnsw_m", "ef_search", "ef_construction"):
            value = getattr(self, name)
            if is_whole(value) and type(value) is not int:  # a numpy integer: the settings are hashed as JSON
                object.__setattr__(self, name, int(value))


@dataclass(frozen=True)
class IndexArtifact:
    folder: Path
    count: int
    dim: int
    metric: str
    index_type: str
    embedder_hash: str
    content_hash: str

    @property
    def files(self) -> dict[str, Path]:
        """The three files a retriever's version folder needs, by name."""
        return {name: self.folder / name for name in FILES}

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.folder / MANIFEST_FILE).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------------- API


def embed_passages(
    texts: Sequence[str],
    encode: Callable[[list[str]], np.ndarray],
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embed ``texts`` in batches with ``encode``; returns float32 ``[len(texts), dim]``.

    ``progress(done, total)`` is called once before the first batch (done = 0) and after every batch. Each batch's
    result is checked (2-D, one row per text, the same dim every batch, finite); an exception raised by
    ``encode`` becomes a BuildError naming the batch.
    """
    if not is_whole(batch_size) or batch_size < 1:
        raise BuildError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    batch_size = int(batch_size)
    texts = list(texts)
    total = len(texts)
    if progress:
        progress(0, total)
    parts: list[np.ndarray] = []
    dim: int | None = None
    for start in range(0, total, batch_size):
        batch = texts[start : start + batch_size]
        span = f"texts {start}..{start + len(batch) - 1}"
        try:
            out = encode(batch)
        except BuildError:
            raise
        except Exception as err:
            raise BuildError(f"encoding {span} failed: {type(err).__name__}: {err}") from err
        try:
            out = np.asarray(out, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise BuildError(f"encoding {span} returned something that is not a float array: {err}") from err
        if out.ndim != 2 or out.shape[0] != len(batch) or out.shape[1] < 1:
            raise BuildError(
                f"encoding {span} returned shape {list(out.shape)}; expected [{len(batch)}, dim] (one row per text)"
            )
        if dim is not None and out.shape[1] != dim:
            raise BuildError(f"encoding {span} returned dim {out.shape[1]}, earlier batches returned dim {dim}")
        dim = out.shape[1]
        if not np.isfinite(out).all():
            bad = start + int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
            raise BuildError(f"encoding {span} returned NaN or infinite values (first at text {bad}: {texts[bad]!r})")
        parts.append(out)
        if progress:
            progress(start + len(batch), total)
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])


def index_content_hash(passages: Sequence[Passage], settings: IndexSettings, *, embedder_hash: str) -> str:
    """The content hash (and folder name) of the index for these inputs; needs no embeddings."""
    _check_settings(settings)
    _check_embedder_hash(embedder_hash)
    digest = hashlib.sha256()
    header = {
        "builder": "index",
        "builder_version": BUILDER_VERSION,
        "embedder_hash": embedder_hash,
        "settings": asdict(settings),
    }
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
    for p in passages:
        digest.update(_passage_line(p) + b"\n")
    return digest.hexdigest()


def find_cached_index(
    passages: Sequence[Passage], settings: IndexSettings, *, embedder_hash: str, cache_dir: Path | None = None
) -> IndexArtifact | None:
    """The complete cached artifact for these inputs, or None (then embed and call ``build_index``)."""
    content_hash = index_content_hash(passages, settings, embedder_hash=embedder_hash)
    return _load_cached(_root(cache_dir) / "index" / content_hash)


def load_index_artifact(folder: Path) -> IndexArtifact:
    """Read an artifact folder back; BuildError when it is missing or incomplete."""
    artifact = _load_cached(Path(folder), expect_hash=False)
    if artifact is None:
        raise BuildError(f"{folder} is not a complete index artifact (needs {', '.join(FILES)})")
    return artifact


def build_index(
    passages: Sequence[Passage],
    embeddings: np.ndarray,
    settings: IndexSettings,
    *,
    embedder_hash: str,
    cache_dir: Path | None = None,
) -> IndexArtifact:
    """Build (or fetch from the cache) the index of ``passages`` whose rows in ``embeddings`` are aligned with them.

    Raises BuildError for bad settings, passages (empty, duplicate or malformed ids, empty text, metadata that is
    not JSON) or embeddings (not [len(passages), dim], not finite, not floating point), and when the index cannot
    be built or written. Nothing is left in the cache after a failure.
    """
    passages = list(passages)
    _check_passages(passages)
    vectors = _check_embeddings(embeddings, passages)
    content_hash = index_content_hash(passages, settings, embedder_hash=embedder_hash)
    n, dim = vectors.shape
    final_dir = _root(cache_dir) / "index" / content_hash

    return cached_build(
        final_dir,
        load=_load_cached,
        build=lambda tmp_dir: _write_artifact(
            tmp_dir, passages, vectors, settings, embedder_hash=embedder_hash, content_hash=content_hash
        ),
        check=lambda cached: _check_cached_matches(cached, n, dim, embedder_hash),
    )


# ------------------------------------------------------------------------------------------------------ build


def _write_artifact(
    out_dir: Path,
    passages: list[Passage],
    vectors: np.ndarray,
    settings: IndexSettings,
    *,
    embedder_hash: str,
    content_hash: str,
) -> None:
    import faiss

    n, dim = vectors.shape
    try:
        index, params = _make_index(faiss, vectors, settings)
    except RuntimeError as err:  # faiss reports C++ failures (bad parameters, allocation) as RuntimeError
        raise BuildError(f"faiss could not build the {settings.type} index of {n} x {dim} vectors: {err}") from err
    if index.ntotal != n:  # pragma: no cover - faiss contract
        raise BuildError(f"faiss index holds {index.ntotal} vectors after adding {n}")
    faiss.write_index(index, str(out_dir / INDEX_FILE))
    with open(out_dir / DOCSTORE_FILE, "wb") as f:
        for p in passages:
            f.write(_passage_line(p) + b"\n")
    norms = np.linalg.norm(vectors, axis=1)
    manifest = {
        "format": FORMAT,
        "builder_version": BUILDER_VERSION,
        "content_hash": content_hash,
        "embedder_hash": embedder_hash,
        "dim": dim,
        "count": n,
        "metric": METRIC,
        "normalized": bool(np.all(np.abs(norms - 1.0) <= NORM_TOLERANCE)),
        "index_type": settings.type,
        "parameters": params,
        "settings": asdict(settings),
        "faiss_version": getattr(faiss, "__version__", "unknown"),
        "files": {"index": INDEX_FILE, "docstore": DOCSTORE_FILE},
    }
    # written last: a folder with a readable manifest is complete
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _make_index(faiss: Any, vectors: np.ndarray, settings: IndexSettings) -> tuple[Any, dict[str, Any]]:
    n, dim = vectors.shape
    if settings.type == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, {}
    if settings.type == "ivf":
        requested = settings.nlist if settings.nlist is not None else round(4 * math.sqrt(n))
        nlist = max(1, min(int(requested), n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # nlist is chosen on purpose for small corpora too: no "please provide at least N training points" noise
        index.cp.min_points_per_centroid = 1
        index.train(vectors)
        index.add(vectors)
        nprobe = min(settings.nprobe, nlist)
        index.nprobe = nprobe
        return index, {"nlist": nlist, "nprobe": nprobe}
    if settings.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.ef_construction
        index.hnsw.efSearch = settings.ef_search
        index.add(vectors)
        return index, {
            "hnsw_m": settings.hnsw_m,
            "ef_construction": settings.ef_construction,
            "ef_search": settings.ef_search,
        }
    raise BuildError(f"index type {settings.type!r} is not supported; use one of {', '.join(INDEX_TYPES)}")


# ------------------------------------------------------------------------------------------------------ checks


def _check_settings(settings: IndexSettings) -> None:
    if not isinstance(settings, IndexSettings):
        raise BuildError(f"settings must be an IndexSettings, got {type(settings).__name__}")
    problems = []
    if settings.type not in INDEX_TYPES:
        problems.append(f"type {settings.type!r} is not supported; use one of {', '.join(INDEX_TYPES)}")
    limits = {"nprobe": 1, "hnsw_m": 2, "ef_search": 1, "ef_construction": 1}
    values = {name: getattr(settings, name) for name in limits}
    if settings.nlist is not None:
        limits["nlist"] = 1
        values["nlist"] = settings.nlist
    for name, low in limits.items():
        value = values[name]
        if not is_whole(value) or value < low:
            problems.append(f"{name} must be an integer >= {low}, got {value!r}")
    if problems:
        raise BuildError("invalid index settings: " + "; ".join(problems))


def _check_embedder_hash(embedder_hash: str) -> None:
    if not isinstance(embedder_hash, str) or not embedder_hash.strip():
        raise BuildError(f"embedder_hash must be a non-empty string identifying the encoder, got {embedder_hash!r}")


def _check_passages(passages: list[Passage]) -> None:
    if not passages:
        raise BuildError("cannot build an index of no passages: the corpus is empty")
    problems = []
    seen: dict[str, int] = {}
    for i, p in enumerate(passages):
        if not isinstance(p, Passage):
            problems.append(f"passage {i}: expected a Passage, got {type(p).__name__}")
            continue
        why = id_problem(p.id)
        if why:
            problems.append(f"passage {i}: {why}")
        elif p.id in seen:
            problems.append(f"passage {i}: duplicate id {p.id!r} (also passage {seen[p.id]})")
        else:
            seen[p.id] = i
        if not isinstance(p.text, str) or not p.text.strip():
            problems.append(f"passage {i} ({p.id!r}): text must be a non-empty string")
        if not isinstance(p.metadata, dict):
            problems.append(f"passage {i} ({p.id!r}): metadata must be a dict, got {type(p.metadata).__name__}")
        else:
            try:
                json.dumps(p.metadata, allow_nan=False)
            except (TypeError, ValueError) as err:
                problems.append(f"passage {i} ({p.id!r}): metadata is not JSON-serialisable ({err})")
    if problems:
        raise BuildError(f"invalid passages ({len(problems)}):\n" + "\n".join(f"  {m}" for m in problems))


def _check_embeddings(embeddings: np.ndarray, passages: list[Passage]) -> np.ndarray:
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[0] != len(passages) or array.shape[1] < 1:
        raise BuildError(
            f"embeddings must have shape [{len(passages)}, dim] (one row per passage), got {list(array.shape)}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise BuildError(f"embeddings must be floating point (float32), got dtype {array.dtype}")
    vectors = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(repr(passages[i].id) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise BuildError(f"embeddings hold NaN or infinite values in {len(bad)} row(s): passages {shown}")
    return vectors


def _check_cached_matches(cached: IndexArtifact, n: int, dim: int, embedder_hash: str) -> None:
    if cached.count != n or cached.dim != dim:
        raise BuildError(
            f"cached index {cached.folder} holds {cached.count} x {cached.dim} vectors but these embeddings are "
            f"{n} x {dim}: embedder_hash {embedder_hash!r} does not identify the encoder that produced them"
        )


# ------------------------------------------------------------------------------------------------------ cache


def _passage_line(p: Passage) -> bytes:
    try:
        line = json.dumps(
            {"id": p.id, "text": p.text, "metadata": p.metadata}, sort_keys=True, ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as err:
        raise BuildError(f"passage {p.id!r}: metadata is not JSON-serialisable ({err})") from err
    return line.encode("utf-8")


def _root(cache_dir: Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _load_cached(folder: Path, *, expect_hash: bool = True) -> IndexArtifact | None:
    """The artifact in ``folder`` when it is complete (in the cache, its name must be its content hash)."""
    try:
        meta = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT or (expect_hash and meta.get("content_hash") != folder.name):
            return None
        if not all((folder / name).is_file() for name in FILES):
            return None
        return IndexArtifact(
            folder=folder,
            count=int(meta["count"]),
            dim=int(meta["dim"]),
            metric=str(meta["metric"]),
            index_type=str(meta["index_type"]),
            embedder_hash=str(meta["embedder_hash"]),
            content_hash=str(meta["content_hash"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
