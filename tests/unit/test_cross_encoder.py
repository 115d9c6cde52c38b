"""Cross-encoder (reranker) builder: export, parity, [batch, candidates, sequence] axes, activation, int8 and bf16
gates, cache.

The bi-encoder exporter shares its machinery (builders/onnx_common.py); tests/unit/test_onnx_encoder.py covers it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tritonforge.builders import cross_encoder
from tritonforge.builders.cross_encoder import CrossEncoderArtifact, export_cross_encoder, load_artifact
from tritonforge.builders.tiny_models import make_tiny_cross_encoder
from tritonforge.errors import BuildError, ParityError

PAIRS_A = [("What is Triton?", ["Triton serves models.", "Yes", "The weather today is sunny with a light breeze."])]
PAIRS_B = [
    ("cats", ["Cats and dogs are common pets in many homes around the world.", "no"]),
    ("Where does the library open?", ["The library opens at nine.", "Water boils at one hundred degrees " * 4]),
    ("a", ["b", "c"]),
    ("How are tokens made from words by the tokenizer?", ["Tokenizers split words into smaller pieces.", "Pieces."]),
]


@pytest.fixture(scope="module")
def fp32(tiny_cross_encoder: Path) -> CrossEncoderArtifact:
    return export_cross_encoder(tiny_cross_encoder)


@pytest.fixture(scope="module")
def reference(tiny_cross_encoder: Path):
    """PyTorch logit of one (query, passage) pair, unpadded, straight from the classifier."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_cross_encoder), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_cross_encoder), local_files_only=True).eval()

    def score(query: str, passage: str) -> float:
        with torch.inference_mode():
            return float(model(**tok(query, passage, truncation=True, return_tensors="pt")).logits[0, 0])

    return score


def feeds(artifact: CrossEncoderArtifact, groups: list[tuple[str, list[str]]]) -> dict[str, np.ndarray]:
    """[len(groups), candidates, sequence] encoded by the shipped tokenizer.json (it pads and truncates)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(artifact.tokenizer_files["tokenizer.json"]))
    enc = tok.encode_batch([(q, p) for q, passages in groups for p in passages])
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    k = len(groups[0][1])
    return {
        n: np.array([getattr(e, fields[n]) for e in enc], dtype=np.int64).reshape(len(groups), k, -1)
        for n in artifact.input_names
    }


def run(artifact: CrossEncoderArtifact, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["SCORES"], inputs)
    return scores


# ---------------------------------------------------------------------------------------------------------- fp32


def test_export_parity_and_artifact(fp32: CrossEncoderArtifact) -> None:
    a = fp32
    assert a.output_name == "SCORES" and a.activation == "none" and a.precision == "fp32"
    assert a.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert a.max_seq_length == 128  # tokenizer model_max_length, capped by max_position_embeddings
    assert a.parity_max_abs_diff is not None and a.parity_max_abs_diff <= 1e-4
    assert a.quantized_max_abs_diff is None and a.notes == ()
    assert a.onnx_path.name == "model.onnx" and a.directory.name == a.content_hash
    assert a.directory.parent.name == "cross-encoder"
    assert set(a.tokenizer_files) >= {"tokenizer.json", "tokenizer_config.json"}
    assert all(p.is_file() and p.parent.parent == a.directory for p in a.tokenizer_files.values())
    build = json.loads((a.directory / "artifact.json").read_text())["build"]
    assert build["parity_pairs"] == 10 and build["parity_batch"] == [2, 5]
    assert load_artifact(a.directory) == a


def test_graph_names_dtypes_and_dynamic_axes(fp32: CrossEncoderArtifact) -> None:
    import onnx

    graph = onnx.load(str(fp32.onnx_path)).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for t in inputs.values():
        assert t.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == ["batch", "candidates", "sequence"]
    (out,) = graph.output
    assert out.name == "SCORES" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param for d in out.type.tensor_type.shape.dim] == ["batch", "candidates"]


def test_two_batch_shapes_match_pytorch_pair_by_pair(fp32: CrossEncoderArtifact, reference) -> None:
    a_feeds, b_feeds = feeds(fp32, PAIRS_A), feeds(fp32, PAIRS_B)
    assert a_feeds["input_ids"].shape[:2] == (1, 3) and b_feeds["input_ids"].shape[:2] == (4, 2)
    assert a_feeds["input_ids"].shape[2] != b_feeds["input_ids"].shape[2]
    a, b = run(fp32, a_feeds), run(fp32, b_feeds)
    assert a.shape == (1, 3) and b.shape == (4, 2) and a.dtype == np.float32
    for scores, groups in ((a, PAIRS_A), (b, PAIRS_B)):
        expected = [[reference(q, p) for p in passages] for q, passages in groups]
        np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert np.ptp(b) > 0.05  # the tiny model's scores differ from pair to pair: the check has teeth
    # padding does not leak: a pair scores the same alone as in a padded batch
    (query, passages) = PAIRS_B[1]
    alone = run(fp32, feeds(fp32, [(query, [passages[0]])]))
    np.testing.assert_allclose(alone[0, 0], b[1, 0], atol=1e-5)


def test_sigmoid_activation(tiny_cross_encoder: Path, fp32: CrossEncoderArtifact) -> None:
    s = export_cross_encoder(tiny_cross_encoder, activation="sigmoid")
    assert s.activation == "sigmoid" and s.content_hash != fp32.content_hash
    assert s.parity_max_abs_diff <= 1e-4
    inputs = feeds(s, PAIRS_B)
    probs, logits = run(s, inputs), run(fp32, inputs)
    assert ((probs > 0) & (probs < 1)).all()
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)


def test_max_seq_length_truncates_pairs_like_transformers(tiny_cross_encoder: Path, reference) -> None:
    from tokenizers import Tokenizer

    a = export_cross_encoder(tiny_cross_encoder, max_seq_length=24)
    assert a.max_seq_length == 24 and a.parity_max_abs_diff <= 1e-4  # the parity pairs are truncated at 24
    assert json.loads(a.tokenizer_files["tokenizer_config.json"].read_text())["model_max_length"] == 24
    tok = Tokenizer.from_file(str(a.tokenizer_files["tokenizer.json"]))
    assert len(tok.encode("the quick brown fox " * 20, "jumps over the lazy dog " * 20).ids) == 24


# ----------------------------------------------------------------------------------------------------- precision


def test_int8_reports_score_diff_and_refuses_above_max_unless_forced(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    import onnx

    cache = tmp_path / "cache"
    a = export_cross_encoder(tiny_cross_encoder, precision="int8", max_quantized_diff=1.0, cache_dir=cache)
    assert a.precision == "int8" and a.parity_max_abs_diff <= 1e-4  # parity is checked before quantising
    assert a.quantized_max_abs_diff is not None and 0 < a.quantized_max_abs_diff <= 1.0
    graph = onnx.load(str(a.onnx_path)).graph
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node)
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not (a.directory / "model.fp32.onnx").exists()

    # the cached artifact is re-checked against this call's threshold
    with pytest.raises(BuildError, match=r"scores differ from fp32 by up to .* > max_quantized_diff 1e-09; pass force"):
        export_cross_encoder(tiny_cross_encoder, precision="int8", max_quantized_diff=1e-9, cache_dir=cache)
    forced = export_cross_encoder(
        tiny_cross_encoder, precision="int8", max_quantized_diff=1e-9, force=True, cache_dir=cache
    )
    assert forced.directory == a.directory and forced.notes == (*a.notes, (
        f"int8 model's scores differ from fp32 by up to {a.quantized_max_abs_diff:.6f} > max_quantized_diff 1e-09"
        ": accepted (force)"))

    # a fresh build refuses too, and leaves nothing behind
    with pytest.raises(BuildError, match="max_quantized_diff"):
        export_cross_encoder(tiny_cross_encoder, precision="int8", max_quantized_diff=1e-9, cache_dir=tmp_path / "new")
    assert list((tmp_path / "new" / "cross-encoder").iterdir()) == []


def test_bf16_runs_the_torch_engine_in_bfloat16_gated_against_its_float32_scores(
    tiny_cross_encoder: Path, tmp_path: Path
) -> None:
    """cpu_quantization bf16: no ONNX; parity checked on the engine in float32, then the engine in bfloat16 (what the
    runner serves) gated on its largest score difference, refused above max_quantized_diff unless forced, as int8."""
    cache = tmp_path / "cache"
    a = export_cross_encoder(tiny_cross_encoder, engine="torch", precision="bf16", activation="sigmoid",
                             cache_dir=cache)
    assert (a.engine, a.precision, a.onnx_path) == ("torch", "bf16", None) and not list(a.directory.rglob("*.onnx"))
    assert a.parity_max_abs_diff is not None and a.parity_max_abs_diff <= 1e-4  # float32 engine vs the reference
    assert a.quantized_max_abs_diff is not None and 0 < a.quantized_max_abs_diff <= 0.05  # bf16 differs, a little
    assert load_artifact(a.directory) == a
    with pytest.raises(BuildError, match=r"bf16 model's scores differ from fp32 by up to .* > max_quantized_diff 1e-09"):
        export_cross_encoder(tiny_cross_encoder, engine="torch", precision="bf16", activation="sigmoid",
                             max_quantized_diff=1e-9, cache_dir=cache)  # the cached artifact, re-checked
    with pytest.raises(BuildError, match=r"bf16 model's scores differ from fp32 by up to .* pass force=True"):
        export_cross_encoder(tiny_cross_encoder, engine="torch", precision="bf16", max_quantized_diff=1e-9,
                             cache_dir=tmp_path / "new")  # a fresh build
    assert list((tmp_path / "new" / "cross-encoder").iterdir()) == []
    forced = export_cross_encoder(tiny_cross_encoder, engine="torch", precision="bf16", max_quantized_diff=1e-9,
                                  force=True, cache_dir=tmp_path / "new")
    assert [n for n in forced.notes if n.endswith("accepted (force)")] == [
        f"bf16 model's scores differ from fp32 by up to {forced.quantized_max_abs_diff:.6f} > max_quantized_diff "
        "1e-09: accepted (force)"
    ], forced.notes
    # the note is this call's: the same cached artifact under a threshold it passes says nothing forced (it said
    # the forcing build's note), and forced under the default threshold it passes neither
    for again in (export_cross_encoder(tiny_cross_encoder, engine="torch", precision="bf16", cache_dir=tmp_path / "new"),
                  export_cross_encoder(tiny_cross_encoder, engine="torch", precision="bf16", force=True,
                                       cache_dir=tmp_path / "new")):
        assert again.directory == forced.directory and not any("force" in n for n in again.notes), again.notes


def test_the_torch_engine_scores_in_bf16_close_to_fp32(tiny_cross_encoder: Path) -> None:
    """The runner's engine with precision bf16: bfloat16 weights, float32 [rows, candidates] scores near fp32's,
    for the [groups, candidates, sequence] batch a build checks and the [1, pairs, sequence] calls the runner makes."""
    import torch

    from tritonforge.builders import onnx_common as common

    fp32_engine = common.torch_runner(tiny_cross_encoder, common.torch_parameters("scoring", "fp32"))
    bf16_engine = common.torch_runner(tiny_cross_encoder, common.torch_parameters("scoring", "bf16"))
    assert bf16_engine.dtype == torch.bfloat16 and next(bf16_engine.model.parameters()).dtype == torch.bfloat16
    from tokenizers import Tokenizer

    fp32_art = export_cross_encoder(tiny_cross_encoder)
    tok = Tokenizer.from_file(str(fp32_art.tokenizer_files["tokenizer.json"]))
    pairs = [(q, p) for q, ps in PAIRS_A + PAIRS_B for p in ps][:10]
    arrays = common.encoding_arrays(tok.encode_batch(pairs), fp32_art.input_names)
    for shape in ((1, len(pairs)), (len(pairs) // 2, 2)):
        feed = {n: a.reshape(*shape, -1) for n, a in arrays.items()}
        (want,) = fp32_engine.run(["SCORES"], feed)
        (got,) = bf16_engine.run(["SCORES"], feed)
        assert got.dtype == np.float32 and got.shape == want.shape == shape
        assert 0 < float(np.abs(got - want).max()) <= 0.05


# ----------------------------------------------------------------------------------------------- errors + cache


def test_num_labels_other_than_one_refused(tmp_path: Path) -> None:
    ckpt = make_tiny_cross_encoder(tmp_path / "two-labels", num_labels=2)
    with pytest.raises(BuildError, match=r"num_labels 2, but a cross-encoder \(reranker\) scores one logit"):
        export_cross_encoder(ckpt, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "cross-encoder").iterdir()) == []


def test_encoder_without_classification_head_refused(tiny_bert: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "bare"
    shutil.copytree(tiny_bert, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["id2label"], cfg["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BuildError, match=r"no weights for classifier\.bias, classifier\.weight"):
        export_cross_encoder(ckpt, cache_dir=tmp_path / "cache")


def test_folder_without_weights_refused(tmp_path: Path, tiny_cross_encoder: Path) -> None:
    ckpt = tmp_path / "no-weights"
    ckpt.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_cross_encoder / name, ckpt / name)
    with pytest.raises(BuildError) as err:
        export_cross_encoder(ckpt)
    assert str(ckpt) in str(err.value) and "model.safetensors" in str(err.value)


def test_bad_settings(tiny_cross_encoder: Path) -> None:
    with pytest.raises(BuildError, match="activation 'softmax' is not supported; use one of none, sigmoid"):
        export_cross_encoder(tiny_cross_encoder, activation="softmax")  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="precision 'int4'"):
        export_cross_encoder(tiny_cross_encoder, precision="int4")
    with pytest.raises(BuildError, match="max_quantized_diff must be a number >= 0"):
        export_cross_encoder(tiny_cross_encoder, max_quantized_diff=-1)
    for bad in (float("nan"), True, "0.1", None):
        with pytest.raises(BuildError, match="max_quantized_diff must be a number >= 0"):
            export_cross_encoder(tiny_cross_encoder, max_quantized_diff=bad)  # type: ignore[arg-type]
    with pytest.raises(BuildError, match="exceeds the model's max_position_embeddings 128"):
        export_cross_encoder(tiny_cross_encoder, max_seq_length=512)
    with pytest.raises(BuildError, match="no room for a query and a passage"):
        export_cross_encoder(tiny_cross_encoder, max_seq_length=4)


def test_parity_failure_raises_and_leaves_nothing(tiny_cross_encoder: Path, tmp_path: Path, monkeypatch) -> None:
    real = cross_encoder._reference_scores
    monkeypatch.setattr(cross_encoder, "_reference_scores", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(ParityError, match=r"max abs score diff 0\.001.* > tolerance 0\.0001 over 10"):
        export_cross_encoder(tiny_cross_encoder, cache_dir=tmp_path)
    assert list((tmp_path / "cross-encoder").iterdir()) == []


def test_second_export_hits_the_cache(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    stale, live = tmp_path / "cross-encoder" / ".tmp-stale", tmp_path / "cross-encoder" / ".tmp-live"
    for folder in (stale, live):
        folder.mkdir(parents=True)
    os.utime(stale, (time.time() - 3 * 86400,) * 2)

    stages: list[str] = []
    first = export_cross_encoder(tiny_cross_encoder, cache_dir=tmp_path, progress=stages.append)
    assert stages == ["loading checkpoint", "exporting", "parity check"]
    assert not stale.exists() and live.is_dir()  # killed builds are cleaned up, running ones left alone
    mtime = first.onnx_path.stat().st_mtime_ns
    stages.clear()
    start = time.perf_counter()
    second = export_cross_encoder(tiny_cross_encoder, cache_dir=tmp_path, progress=stages.append)
    assert time.perf_counter() - start < 1.0
    assert stages == ["cache hit"] and second == first and second.onnx_path.stat().st_mtime_ns == mtime
    meta = json.loads((first.directory / "artifact.json").read_text())
    assert meta["content_hash"] == first.content_hash and meta["build"]["exporter"] in ("torchscript", "dynamo")
    assert sorted(p.name for p in (tmp_path / "cross-encoder").iterdir()) == [".tmp-live", first.content_hash]
    with pytest.raises(ParityError, match="cached export's max abs diff"):
        export_cross_encoder(tiny_cross_encoder, cache_dir=tmp_path, parity_tolerance=1e-12)
    # damage is repaired: a folder missing its model is rebuilt
    first.onnx_path.unlink()
    again = export_cross_encoder(tiny_cross_encoder, cache_dir=tmp_path)
    assert again.onnx_path.is_file() and again.content_hash == first.content_hash


def test_declared_sentence_transformers_activation_is_noted(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "st-sigmoid"
    shutil.copytree(tiny_cross_encoder, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid", "version": "4.1.0"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    raw = export_cross_encoder(ckpt, cache_dir=tmp_path / "cache")
    assert any("declares a 'sigmoid' activation" in note for note in raw.notes)
    assert export_cross_encoder(ckpt, activation="sigmoid", cache_dir=tmp_path / "cache").notes == ()


def test_torch_engine_exports_nothing_and_checks_the_runner(
    tiny_cross_encoder: Path, fp32: CrossEncoderArtifact, tmp_path: Path, monkeypatch
) -> None:
    """For images without the onnxruntime backend: no model.onnx; the parity check runs the python runner's
    PyTorch engine on the same padded [groups, candidates, sequence] batch."""
    a = export_cross_encoder(tiny_cross_encoder, engine="torch", activation="sigmoid", cache_dir=tmp_path)
    assert a.engine == "torch" and a.onnx_path is None and a.activation == "sigmoid"
    assert a.parity_max_abs_diff is not None and a.parity_max_abs_diff <= 1e-4
    assert (a.input_names, a.max_seq_length) == (fp32.input_names, fp32.max_seq_length)
    assert not list(a.directory.rglob("*.onnx"))
    build = json.loads((a.directory / "artifact.json").read_text())["build"]
    assert build["exporter"] is None and build["parity_batch"] == [2, 5]
    assert load_artifact(a.directory) == a
    with pytest.raises(BuildError, match="not int8"):
        export_cross_encoder(tiny_cross_encoder, engine="torch", precision="int8", cache_dir=tmp_path)
    with pytest.raises(BuildError, match='precision "bf16" is served by the PyTorch runner: use engine="torch"'):
        export_cross_encoder(tiny_cross_encoder, precision="bf16", cache_dir=tmp_path)
    real = cross_encoder._reference_scores
    monkeypatch.setattr(cross_encoder, "_reference_scores", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(ParityError, match=r"the PyTorch runner disagrees with the transformers reference: max abs score diff 0\.001"):
        export_cross_encoder(tiny_cross_encoder, engine="torch", cache_dir=tmp_path / "other")


@pytest.mark.usefixtures("no_torchscript_exporter")
def test_a_torch_without_the_torchscript_exporter_builds_with_dynamo(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    """torch deprecates the TorchScript ONNX exporter (dynamo=False; dynamo is the default since 2.9): on a torch
    that no longer has it, export_onnx's fallback builds the scoring model with the dynamo exporter, parity checked."""
    artifact = export_cross_encoder(tiny_cross_encoder, cache_dir=tmp_path)
    meta = json.loads((artifact.directory / "artifact.json").read_text())
    assert meta["build"]["exporter"] == "dynamo"
    assert artifact.parity_max_abs_diff is not None and artifact.parity_max_abs_diff <= 1e-4  # the default tolerance
