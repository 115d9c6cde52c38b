"""tritonforge.build end to end on a tiny checkpoint (no server): write, validate, refuse, keep the old repo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tritonforge.build import build
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


def test_gpu_target_serves_encoders_on_pytorch_where_the_image_has_no_onnxruntime_backend(
    tiny_bert: Path, tmp_path: Path
) -> None:
    """The default serving image (-trtllm-python-py3) ships only the python and TensorRT-LLM backends: the encoder
    is the python runner on PyTorch from the checkpoint, and the repository passes `validate --image` for it."""
    from tritonforge.trtllm.images import default_image

    repo = tmp_path / "repo"
    report = build(_spec(tiny_bert, gpu_precision="fp16"), repo, target="gpu")
    assert not any(n.startswith("WARNING:") for n in report.notes), report.notes
    assert any("served by the python runner on PyTorch" in n for n in report.notes), report.notes
    text = (repo / "tiny_encoder" / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "KIND_GPU" in text and "allow_ragged_batch: true" in text
    for key, value in {"engine": "torch", "task": "embedding", "precision": "fp16", "pooling": "mean"}.items():
        assert f'key: "{key}"\n  value {{\n    string_value: "{value}"' in text, (key, text)
    version = repo / "tiny_encoder" / "1"
    assert sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()) == [
        "checkpoint/config.json", "checkpoint/model.safetensors", "lineage.json", "model.py", "torch_engine.py"
    ]
    assert check_repository(repo, image=default_image(), image_backends=True) == []


def test_gpu_target_renders_the_onnxruntime_backend_for_the_full_image(tiny_bert: Path, tmp_path: Path) -> None:
    image = "nvcr.io/nvidia/tritonserver:26.07-py3"
    report = build(_spec(tiny_bert, gpu_precision="fp32"), tmp_path / "repo", target="gpu", image=image)
    assert not any(n.startswith("WARNING:") for n in report.notes), report.notes
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
