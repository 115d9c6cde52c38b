"""tritonforge.build end to end on a tiny checkpoint (no server): write, validate, refuse, keep the old repo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tritonforge.build import build
from tritonforge.builders.checkpoints import default_cache_dir
from tritonforge.errors import BuildError, ParityError
from tritonforge.spec import parse_spec
from tritonforge.validator import check_repository


def _spec(checkpoint: Path, **model: object) -> object:
    entry = {"kind": "embedding", "checkpoint": str(checkpoint), "max_batch_size": 8,
             "dynamic_batching": {"preferred_batch_sizes": [4, 8]}, **model}
    return parse_spec({"name": "tiny", "models": {"tiny": entry}})


def test_build_writes_a_valid_repository(tiny_bert: Path, tmp_path: Path) -> None:
    report = build(_spec(tiny_bert), tmp_path / "repo", target="cpu")
    repo = tmp_path / "repo"
    assert report.models == ("embed", "tiny_encoder", "tiny_tokenizer")
    assert (repo / "tiny_encoder" / "1" / "model.onnx").is_file()
    assert (repo / "tiny_tokenizer" / "1" / "tokenizer" / "tokenizer.json").is_file()
    assert (repo / "embed" / "1").is_dir()
    assert check_repository(repo) == []
    assert report.artifacts[0].parity_max_abs_diff is not None and report.artifacts[0].parity_max_abs_diff <= 1e-4


AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4_CPU = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"  # bf16 in AVX-512, no AMX


def test_a_cpu_build_on_an_amx_machine_names_its_fp32_encoders_bf16_would_speed_up(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One note per build, naming the fp32 (cpu_quantization none) models, only where /proc/cpuinfo has amx_bf16."""
    from tritonforge.build import bf16_notes
    from tritonforge.builders import onnx_common

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(onnx_common, "CPUINFO", cpuinfo)
    cpuinfo.write_text(AMX_CPU)
    (note,) = [n for n in build(_spec(tiny_bert), tmp_path / "repo", target="cpu").notes if "AMX" in n]
    assert note.startswith("this CPU has AMX (amx_bf16): cpu_quantization: bf16 serves tiny ~2x faster here"), note
    assert "gate" in note and "docs/spec.md" in note
    two = parse_spec({"name": "two", "models": {
        "a": {"kind": "embedding", "checkpoint": "pypi:x"},
        "b": {"kind": "embedding", "checkpoint": "pypi:x", "ensemble": "embed_b", "cpu_quantization": "bf16"},
        "c": {"kind": "embedding", "checkpoint": "pypi:x", "ensemble": "embed_c", "cpu_quantization": "int8"},
        "rr": {"kind": "reranker", "checkpoint": "pypi:x"},
        "rr2": {"kind": "reranker", "checkpoint": "pypi:x", "ensemble": "rerank2", "cpu_quantization": "bf16"},
    }})
    (note,) = bf16_notes(two)
    assert "bf16 serves a, rr ~2x" in note, note  # b, rr2 are bf16 already, int8's c is not fp32
    assert bf16_notes(two.with_target("gpu")) == []
    for other in (ZEN4_CPU, "processor\t: 0\n"):  # native bf16 without AMX; flags unreadable
        cpuinfo.write_text(other)
        assert bf16_notes(two) == []
    cpuinfo.unlink()
    assert bf16_notes(two) == []
    assert not any("AMX" in n for n in build(_spec(tiny_bert), tmp_path / "plain", target="cpu").notes)


def test_gpu_target_serves_encoders_on_pytorch_where_the_image_has_no_onnxruntime_backend(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """The default serving image (-trtllm-python-py3) ships only the python and TensorRT-LLM backends: the encoder
    is the python runner on PyTorch from the checkpoint, and the repository passes `validate --image` for it."""
    from tritonforge.trtllm.images import default_image

    repo = tmp_path / "repo"
    report = build(_spec(tiny_bert, gpu_precision="fp16", cpu_quantization="int8"), repo, target="gpu")
    assert not any(n.startswith("WARNING:") for n in report.notes), report.notes
    # the cpu target's field on a gpu build: said, where it was ignored silently
    assert "tiny: cpu_quantization int8 is the cpu target's; the gpu target serves gpu_precision fp16" in report.notes
    assert any("served by the python runner on PyTorch" in n for n in report.notes), report.notes
    text = (repo / "tiny_encoder" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "KIND_GPU" in text and "allow_ragged_batch: true" in text
    for key, value in {"engine": "torch", "task": "embedding", "precision": "fp16", "pooling": "mean"}.items():
        assert f'key: "{key}"\n  value {{\n    string_value: "{value}"' in text, (key, text)
    version = repo / "tiny_encoder" / "1"
    assert sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()) == [
        "affinity.py", "call_plan.py", "checkpoint/config.json", "checkpoint/model.safetensors", "cores.py",
        "lineage.json", "model.py", "runner_parameters.py", "torch_engine.py",
    ]  # no model.onnx; the runner ships whole (call_plan.py, affinity.py serve CPU instances)
    assert check_repository(repo, image=default_image(), image_backends=True) == []
    # nothing exported to ONNX for it: the build checked the PyTorch runner itself against the reference
    (artifact,) = report.artifacts
    assert artifact.kind == "torch-encoder" and artifact.precision == "fp16"
    assert artifact.parity_max_abs_diff is not None and artifact.parity_max_abs_diff <= 1e-4
    assert any("half-precision numerics are not measured" in n for n in report.notes), report.notes
    assert not list(default_cache_dir().glob(f"*/{artifact.content_hash}/*.onnx"))


def test_cpu_bf16_serves_the_checkpoint_on_the_pytorch_runner_once_it_passes_the_quantization_gate(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cpu_quantization bf16: no ONNX export; the python runner's torch engine in bfloat16 (engine torch, precision
    bf16, KIND_CPU), gated like int8 on its outputs against its own float32 ones; a build machine without native bf16
    is told, not refused."""
    from tritonforge.builders import onnx_common

    monkeypatch.setattr(onnx_common, "native_bf16", lambda: False)
    repo = tmp_path / "repo"
    report = build(_spec(tiny_bert, cpu_quantization="bf16", min_mean_cosine=0.5, min_search_overlap=0.0), repo,
                   target="cpu")
    text = (repo / "tiny_encoder" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "KIND_CPU" in text and "allow_ragged_batch: true" in text
    for key, value in {"engine": "torch", "task": "embedding", "precision": "bf16", "pooling": "mean"}.items():
        assert f'key: "{key}"\n  value {{\n    string_value: "{value}"' in text, (key, text)
    version = repo / "tiny_encoder" / "1"
    assert not list(version.glob("*.onnx")) and (version / "checkpoint" / "config.json").is_file()
    assert (version / "torch_engine.py").is_file() and (version / "call_plan.py").is_file()
    assert check_repository(repo) == []
    (artifact,) = report.artifacts
    assert (artifact.kind, artifact.precision) == ("torch-encoder", "bf16")
    gate = artifact.quantization_gate
    assert gate is not None and gate["passages"] == 300 and 0.5 <= gate["mean_cosine"] <= 1.0
    assert artifact.quantized_min_cosine == gate["min_cosine"]
    assert any("bf16: served by the python runner on PyTorch" in n for n in report.notes), report.notes
    assert any("neither amx_bf16 nor avx512_bf16" in n and "emulates" in n for n in report.notes), report.notes
    # the gate refuses what falls short (here: anything but identical results), as it does int8
    # in the spec's words, the same for the cached model as for a fresh one (it named a cache folder and force=True)
    with pytest.raises(BuildError, match=(
        r"^models\.tiny: bf16 model: mean cosine to fp32 .* < min_mean_cosine 1\.0 .*; set force_quantization: true"
    )) as refused:
        build(_spec(tiny_bert, cpu_quantization="bf16", min_mean_cosine=1.0, min_search_overlap=1.0),
              tmp_path / "strict", target="cpu")
    assert "cache" not in str(refused.value) and "force=True" not in str(refused.value)
    assert not (tmp_path / "strict").exists()
    monkeypatch.setattr(onnx_common, "native_bf16", lambda: True)
    report = build(_spec(tiny_bert, cpu_quantization="bf16", min_mean_cosine=0.5, min_search_overlap=0.0),
                   tmp_path / "amx", target="cpu")
    assert not any("emulates" in n for n in report.notes), report.notes


def test_cpu_bf16_reranker_scores_on_the_pytorch_runner_once_its_scores_stay_near_fp32(
    tiny_cross_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reranker's cpu_quantization bf16: no ONNX export; the python runner's torch engine scores in bfloat16 (engine
    torch, task scoring, precision bf16), gated on its score difference from its float32 scores (the report's figure),
    refused beyond the gate as int8 is."""
    from tritonforge.builders import onnx_common

    monkeypatch.setattr(onnx_common, "native_bf16", lambda: False)
    entry = {"kind": "reranker", "checkpoint": str(tiny_cross_encoder), "max_batch_size": 4,
             "cpu_quantization": "bf16"}
    repo = tmp_path / "repo"
    report = build(parse_spec({"name": "rr", "models": {"rr": entry}}), repo, target="cpu")
    text = (repo / "rr_cross_encoder" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "KIND_CPU" in text and "allow_ragged_batch: true" in text
    for key, value in {"engine": "torch", "task": "scoring", "precision": "bf16", "activation": "none",
                       "unpad_output_axes": "1"}.items():
        assert f'key: "{key}"\n  value {{\n    string_value: "{value}"' in text, (key, text)
    version = repo / "rr_cross_encoder" / "1"
    assert not list(version.glob("*.onnx")) and (version / "checkpoint" / "config.json").is_file()
    assert (version / "torch_engine.py").is_file() and (version / "call_plan.py").is_file()
    assert check_repository(repo) == []
    (artifact,) = report.artifacts
    assert (artifact.kind, artifact.precision) == ("torch-cross-encoder", "bf16")
    gate = artifact.quantization_gate
    assert gate is not None and gate["pairs"] == 10 and 0 < gate["max_abs_score_diff"] <= 0.05, gate
    assert any("rr_cross_encoder: bf16: served by the python runner on PyTorch" in n for n in report.notes)
    assert any(n.startswith("rr: bf16: this build machine's CPU has neither") for n in report.notes), report.notes
    # the gate refuses what falls short (here: any difference at all), as it does int8; the bound is the spec's
    strict = {**entry, "max_quantized_diff": 1e-9}
    with pytest.raises(BuildError, match=r"bf16 model's scores differ from fp32 by up to .* > max_quantized_diff 1e-09"):
        build(parse_spec({"name": "rr", "models": {"rr": strict}}), tmp_path / "strict", target="cpu")
    # and a wider bound, for a cross-encoder whose logits span tens, passes what 0.05 would not
    loose = build(parse_spec({"name": "rr", "models": {"rr": {**entry, "max_quantized_diff": 10.0}}}),
                  tmp_path / "loose", target="cpu")
    assert loose.artifacts[0].precision == "bf16"


def test_gpu_target_renders_the_onnxruntime_backend_for_the_full_image(tiny_bert: Path, tmp_path: Path) -> None:
    image = "nvcr.io/nvidia/tritonserver:26.07-py3"
    report = build(_spec(tiny_bert, gpu_precision="fp32"), tmp_path / "repo", target="gpu", image=image)
    assert not any(n.startswith("WARNING:") for n in report.notes), report.notes
    assert report.artifacts[0].kind == "onnx-encoder"
    text = (tmp_path / "repo" / "tiny_encoder" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in text and "KIND_GPU" in text
    assert sorted(p.name for p in (tmp_path / "repo" / "tiny_encoder" / "1").iterdir()) == ["lineage.json", "model.onnx"]


def test_missing_weights_stop_the_build_and_keep_the_previous_repository(tiny_bert: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    build(_spec(tiny_bert), repo, target="cpu")
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_bert, broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(BuildError, match="no-weights"):
        build(_spec(broken), repo, target="cpu")
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parity_failure_stops_the_build(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ParityError, match="tolerance"):
        build(_spec(tiny_bert, parity_tolerance=1e-15), tmp_path / "repo", target="cpu")
    assert not (tmp_path / "repo").exists()


def test_gpu_retriever_index_is_embedded_by_the_pytorch_runner(tiny_bert: Path, tmp_path: Path) -> None:
    """On the default image the encoder serves from PyTorch (no model.onnx): the retriever's corpus is embedded
    in-process by that same engine, and its vectors are the ones the cpu target's ONNX encoder gives."""
    import json

    import faiss
    import numpy as np

    corpus = tmp_path / "corpus.jsonl"
    texts = ["Triton serves models.", "Rivers flood after heavy rain.", "Cats sleep in the sun all afternoon."]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    spec = {"name": "tiny", "models": {
        "tiny": {"kind": "embedding", "checkpoint": str(tiny_bert), "max_batch_size": 8},
        "docs": {"kind": "retriever", "embedder": "tiny", "corpus": str(corpus), "max_batch_size": 8},
    }}
    vectors = {}
    for target in ("gpu", "cpu"):
        repo = tmp_path / target
        report = build(parse_spec(spec), repo, target=target)
        assert report.artifacts[0].kind == ("torch-encoder" if target == "gpu" else "onnx-encoder")
        index = faiss.read_index(str(repo / "docs_retriever" / "1" / "index.faiss"))
        vectors[target] = index.reconstruct_n(0, index.ntotal)
    assert not list((tmp_path / "gpu").rglob("*.onnx"))
    np.testing.assert_allclose(vectors["gpu"], vectors["cpu"], atol=1e-4)


def test_a_bf16_embedders_retriever_index_is_embedded_in_bf16(tiny_bert: Path, tmp_path: Path) -> None:
    """cpu_quantization: bf16 serves queries from the PyTorch engine in bfloat16: the corpus is embedded by that same
    engine at that precision (builders/retrieval.py encode_fn), so documents and queries share one embedding space;
    its vectors sit within bf16's rounding of the fp32 build's, and are not the fp32 ones."""
    import json

    import faiss
    import numpy as np

    corpus = tmp_path / "corpus.jsonl"
    texts = ["Triton serves models.", "Rivers flood after heavy rain.", "Cats sleep in the sun all afternoon."]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    vectors = {}
    for quantization in ("none", "bf16"):
        spec = {"name": "tiny", "models": {
            "tiny": {"kind": "embedding", "checkpoint": str(tiny_bert), "max_batch_size": 8,
                     "cpu_quantization": quantization, "force_quantization": True},  # a random tiny model
            "docs": {"kind": "retriever", "embedder": "tiny", "corpus": str(corpus), "max_batch_size": 8},
        }}
        repo = tmp_path / quantization
        report = build(parse_spec(spec), repo, target="cpu")
        assert report.artifacts[0].precision == ("fp32" if quantization == "none" else "bf16")
        index = faiss.read_index(str(repo / "docs_retriever" / "1" / "index.faiss"))
        vectors[quantization] = index.reconstruct_n(0, index.ntotal)
    cosines = (vectors["bf16"] * vectors["none"]).sum(axis=1)
    assert cosines.min() > 0.99, cosines
    assert not np.allclose(vectors["bf16"], vectors["none"], atol=1e-6)


def test_an_output_folder_that_is_not_a_build_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from tritonforge.errors import RepositoryError

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    # the checkpoint does not exist: a build that got past the output check would fail on it instead
    spec = {"name": "t", "models": {"t": {"kind": "embedding", "checkpoint": str(tmp_path / "missing")}}}
    (spec_dir / "t.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RepositoryError, match="not an earlier tritonforge output"):
        build(spec_dir / "t.yaml", tmp_path / "mine", target="cpu")
    with pytest.raises(RepositoryError, match="an input of this command"):
        build(spec_dir / "t.yaml", spec_dir, target="cpu")
    monkeypatch.chdir(spec_dir)
    with pytest.raises(RepositoryError, match="the current folder"):
        build(spec_dir / "t.yaml", tmp_path, target="cpu")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert (spec_dir / "t.yaml").is_file()


@pytest.mark.parametrize("runtime", ["engine", "llmapi"])
def test_a_cpu_llm_with_bf16_weights_ships_the_parameter_and_says_when_the_build_cpu_emulates_bf16(
    runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonforge.builders import onnx_common
    from tritonforge.builders.tiny_models import make_tiny_decoder

    make_tiny_decoder(tmp_path / "decoder")
    spec = parse_spec({"name": "t", "target": "cpu", "models": {"chat": {
        "kind": "llm", "checkpoint": "decoder", "runtime": runtime, "max_input_len": 64, "max_seq_len": 128,
        "cpu": {"weights": "bf16"}}}}, source_dir=tmp_path)
    monkeypatch.setattr(onnx_common, "native_bf16", lambda: False)
    report = build(spec, tmp_path / "repo", target="cpu")
    text = (tmp_path / "repo" / "tensorrt_llm" / "config.pbtxt").read_text()
    assert 'key: "weights"\n  value {\n    string_value: "bf16"' in text, text
    assert [a.precision for a in report.artifacts] == ["bf16"]
    assert any(n.startswith("chat: bf16:") and "neither amx_bf16 nor avx512_bf16" in n for n in report.notes), report.notes
    monkeypatch.setattr(onnx_common, "native_bf16", lambda: True)
    report = build(spec, tmp_path / "amx", target="cpu")
    assert not any("emulates" in n for n in report.notes), report.notes
    assert not any("int8 weights" in n for n in report.notes), report.notes
    # int8 weights have no quality gate: the build says what they cost (it said nothing)
    int8 = spec.model_copy(update={"models": {"chat": spec.models["chat"].model_copy(
        update={"cpu": spec.models["chat"].cpu.model_copy(update={"weights": "int8"})})}})
    report = build(int8, tmp_path / "int8", target="cpu")
    assert any(n.startswith("chat: int8 weights (no quality gate): greedy output leaves fp32's") for n in report.notes)


def test_every_missing_path_of_the_spec_is_reported_at_once_before_building(tmp_path: Path) -> None:
    """A missing checkpoint, corpus and adapter took three builds to find: the builders stop at the first."""
    from tritonforge.errors import SpecError

    spec = parse_spec({"name": "t", "models": {
        "e": {"kind": "embedding", "checkpoint": "nope"},
        "p": {"kind": "retriever", "embedder": "e", "corpus": "missing.jsonl"},
        "c": {"kind": "llm", "checkpoint": "random:decoder", "adapters": {"a": {"path": "adapters/gone"}}},
    }}, source_dir=tmp_path)
    with pytest.raises(SpecError) as info:
        build(spec, tmp_path / "out", target="cpu")
    assert [str(p) for p in info.value.problems] == [
        f"models.e.checkpoint: {tmp_path / 'nope'} does not exist (a folder is expected here)",
        f"models.p.corpus: {tmp_path / 'missing.jsonl'} does not exist (a file or folder is expected here)",
        f"models.c.adapters.a.path: {tmp_path / 'adapters/gone'} does not exist (a folder is expected here)",
    ]
    assert not (tmp_path / "out").exists()


def test_an_llm_whose_max_seq_len_passes_the_checkpoints_positions_gets_a_note(tmp_path: Path) -> None:
    """max_seq_len 2048 on a checkpoint trained for 512 positions built without a word."""
    spec = parse_spec({"name": "t", "models": {"c": {"kind": "llm", "checkpoint": "random:decoder",
                                                     "max_input_len": 64, "max_seq_len": 2048}}})
    report = build(spec, tmp_path / "long", target="cpu")
    (note,) = [n for n in report.notes if "max_position_embeddings" in n]
    assert note.startswith("c: max_seq_len 2048 is more than the checkpoint's max_position_embeddings 512"), note
    fits = parse_spec({"name": "t", "models": {"c": {"kind": "llm", "checkpoint": "random:decoder",
                                                     "max_input_len": 64, "max_seq_len": 512}}})
    assert not [n for n in build(fits, tmp_path / "fits", target="cpu").notes if "max_position_embeddings" in n]


def test_a_cache_that_cannot_be_written_is_a_build_error(tiny_bert: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a code-health review: a TRITONFORGE_CACHE under a file made `tritonforge.build` raise a bare
    NotADirectoryError (a traceback from the CLI); it is a BuildError naming the path, and nothing is written."""
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("TRITONFORGE_CACHE", str(tmp_path / "afile" / "cache"))
    local = parse_spec({"name": "t", "models": {"tiny": {"kind": "embedding", "checkpoint": str(tiny_bert),
                                                         "max_batch_size": 8}}})
    with pytest.raises(BuildError, match=r"cannot create the cache folder .*afile.*Not a directory"):
        build(local, tmp_path / "out", target="cpu")
    examples = Path(__file__).resolve().parents[2] / "examples"
    with pytest.raises(BuildError, match=r"cannot build: .*afile.*Not a directory"):  # a PyPI checkpoint's unpacking
        build(examples / "embed.yaml", tmp_path / "out", target="cpu")
    assert not (tmp_path / "out").exists()


def test_a_rebuild_takes_the_cached_index_and_long_passages_are_named(tiny_bert: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a RAG audit: a rebuild re-embedded the whole corpus though its index was cached (20k passages: 100 s
    each time), and a passage longer than the embedder takes was indexed from its beginning with no word said."""
    import json

    from tritonforge.builders import index as index_module

    corpus = tmp_path / "corpus.jsonl"
    texts = ["Triton serves models.", "word " * 2000 + "The vault's password is PINEAPPLE.", "Cats sleep."]
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    spec = parse_spec({"name": "tiny", "models": {
        "tiny": {"kind": "embedding", "checkpoint": str(tiny_bert), "max_batch_size": 8},
        "docs": {"kind": "retriever", "embedder": "tiny", "corpus": str(corpus), "max_batch_size": 8},
    }})
    first = build(spec, tmp_path / "a", target="cpu")
    assert [n for n in first.notes if "1 of 3 passages are longer than the" in n and "chunk them" in n], first.notes
    embedded: list[int] = []
    real = index_module.embed_passages
    monkeypatch.setattr(index_module, "embed_passages",
                        lambda texts, *a, **k: embedded.append(1) or real(texts, *a, **k))
    second = build(spec, tmp_path / "b", target="cpu")
    assert embedded == [] and (tmp_path / "b" / "docs_retriever" / "1" / "index.faiss").read_bytes() == (
        tmp_path / "a" / "docs_retriever" / "1" / "index.faiss").read_bytes()
    assert [n for n in second.notes if "passages are longer than" in n]


@pytest.mark.parametrize("runtime", ["engine", "llmapi"])
def test_a_tokenizer_that_is_code_is_refused_unless_the_spec_trusts_it(runtime: str, tmp_path: Path) -> None:
    """upstream's pre/postprocessing load every tokenizer with trust_remote_code=True: a checkpoint's *.py shipped
    into the repository and ran inside Triton, whatever the spec said (security review)."""
    import json

    from tritonforge.builders.tiny_models import make_tiny_decoder
    from tritonforge.errors import BuildError

    ckpt = make_tiny_decoder(tmp_path / "decoder") or tmp_path / "decoder"
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_evil.EvilTokenizer"]}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    (ckpt / "tokenization_evil.py").write_text("raise SystemExit('ran the checkpoint code')\n")
    model = {"kind": "llm", "checkpoint": "decoder", "runtime": runtime, "max_input_len": 64, "max_seq_len": 128}
    spec = parse_spec({"name": "t", "target": "cpu", "models": {"chat": model}}, source_dir=tmp_path)
    with pytest.raises(BuildError) as refused:
        build(spec, tmp_path / "repo", target="cpu")
    assert "models.chat: the checkpoint's tokenizer is code (tokenization_evil.EvilTokenizer" in str(refused.value)
    assert "set trust_remote_code: true on models.chat" in str(refused.value)
    assert not (tmp_path / "repo").exists()

    (ckpt / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "auto_map"}))
    build(spec, tmp_path / "plain", target="cpu")  # the code does not ship with the tokenizer
    assert not list((tmp_path / "plain" / "preprocessing").rglob("tokenization_evil.py"))
    assert 'key: "trust_remote_code"\n  value {\n    string_value: "false"' in (
        tmp_path / "plain" / "preprocessing" / "config.pbtxt").read_text()

    trusted = parse_spec({"name": "t", "target": "cpu", "models": {"chat": {**model, "trust_remote_code": True}}},
                         source_dir=tmp_path)
    build(trusted, tmp_path / "trusted", target="cpu")
    assert list((tmp_path / "trusted" / "preprocessing").rglob("tokenization_evil.py"))
    assert 'key: "trust_remote_code"\n  value {\n    string_value: "true"' in (
        tmp_path / "trusted" / "preprocessing" / "config.pbtxt").read_text()
    if runtime == "engine":
        assert 'string_value: "true"' in (tmp_path / "trusted" / "postprocessing" / "config.pbtxt").read_text()
    # the cpu engine loads the checkpoint's model and tokenizer too: trusted there as well, and only there
    assert 'key: "trust_remote_code"\n  value {\n    string_value: "true"' in (
        tmp_path / "trusted" / "tensorrt_llm" / "config.pbtxt").read_text()
    assert "trust_remote_code" not in (tmp_path / "plain" / "tensorrt_llm" / "config.pbtxt").read_text()
