"""The validator's backend-library rules and its two modes (auto-complete or not), from cases written here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tritonforge.validator import check_repository

TRTLLM = "nvcr.io/nvidia/tritonserver:25.06-trtllm-python-py3"
FULL = "nvcr.io/nvidia/tritonserver:25.06-py3"
IO = 'input { name: "IN" data_type: TYPE_FP32 dims: 2 }\noutput { name: "OUT" data_type: TYPE_FP32 dims: 2 }\n'


def _model(repo: Path, name: str, config: str | None, files: dict[str, str] | None = None) -> Path:
    model = repo / name
    (model / "1").mkdir(parents=True)
    if config is not None:
        (model / "config.pbtxt").write_text(config)
    for rel, text in (files or {}).items():
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_text(text)
    return model


def _messages(repo: Path, **kwargs: object) -> list[str]:
    """What ``tritonforge validate`` reports (it checks backends against the image it is given)."""
    return [p.message for p in check_repository(repo, image_backends=True, **kwargs)]  # type: ignore[arg-type]


# ---------------------------------------------------------------- which backends exist


def test_a_backend_no_image_ships_is_not_found(tmp_path: Path) -> None:
    _model(tmp_path, "m", f'name: "m"\nbackend: "nosuch"\nmax_batch_size: 0\n{IO}')
    messages = _messages(tmp_path)
    assert any(
        m.startswith(
            "unable to find backend library for backend 'nosuch', try specifying runtime on the model configuration."
        )
        for m in messages
    ), messages


def test_a_backend_library_in_the_model_folder_is_found(tmp_path: Path) -> None:
    _model(tmp_path, "m", f'name: "m"\nbackend: "nosuch"\nmax_batch_size: 0\n{IO}', {"libtriton_nosuch.so": ""})
    assert not any("unable to find backend library" in m for m in _messages(tmp_path))


@pytest.mark.parametrize(("image", "found"), [(TRTLLM, False), (FULL, True), ("registry.local/triton:custom", True)])
def test_the_image_decides_which_backends_exist(tmp_path: Path, image: str, found: bool) -> None:
    _model(tmp_path, "enc", f'name: "enc"\nbackend: "onnxruntime"\nmax_batch_size: 0\n{IO}', {"1/model.onnx": ""})
    messages = _messages(tmp_path, image=image)
    missing = any("unable to find backend library for backend 'onnxruntime'" in m for m in messages)
    assert missing == (not found), messages


def test_only_validate_checks_backends_against_the_image(tmp_path: Path) -> None:
    """tritonforge's gpu build records a -trtllm-python-py3 image yet serves encoders with onnxruntime, which that
    image lacks: build and deploy do not apply the per-image list (yet), ``validate --image`` does."""
    _model(tmp_path, "enc", f'name: "enc"\nbackend: "onnxruntime"\nmax_batch_size: 0\n{IO}', {"1/model.onnx": ""})
    (tmp_path / "tritonforge.json").write_text(f'{{"image": "{TRTLLM}"}}')
    assert not any("backend 'onnxruntime'" in p.message for p in check_repository(tmp_path, image=TRTLLM))
    assert not any("backend 'onnxruntime'" in m for m in _messages(tmp_path))
    assert any("backend 'onnxruntime'" in m for m in _messages(tmp_path, image=TRTLLM))


def test_a_python_based_backend_runtime_needs_its_model_py(tmp_path: Path) -> None:
    _model(tmp_path, "m", f'name: "m"\nbackend: "mine"\nruntime: "model.py"\nmax_batch_size: 0\n{IO}')
    assert (
        "unable to find Python backend based backend library 'model.py' for model 'm', searched: "
        "'/opt/tritonserver/backends/mine/model.py'"
    ) in _messages(tmp_path, image=FULL)
    assert not any("model.py" in m for m in _messages(tmp_path, image="registry.local/triton:custom"))


def test_a_runtime_library_the_image_lacks(tmp_path: Path) -> None:
    model = _model(
        tmp_path,
        "m",
        f'name: "m"\nbackend: "pytorch"\nruntime: "libtriton_pytorch.so"\nmax_batch_size: 0\n{IO}',
        {"1/model.pt": ""},
    )
    expected = (
        f"unable to find backend library 'libtriton_pytorch.so' for model 'm', searched: '{model / '1'}' "
        f"'{model}' '/opt/tritonserver/backends/pytorch' "
    )
    assert expected in _messages(tmp_path, image=TRTLLM)
    assert expected not in _messages(tmp_path, image=FULL)


# ---------------------------------------------------------------- the two modes


def test_a_missing_config_is_an_error_only_without_auto_complete(tmp_path: Path) -> None:
    _model(tmp_path, "m.identity", None)
    assert any(m.startswith("failed to open text file for read") for m in _messages(tmp_path))
    assert _messages(tmp_path, auto_complete=True) == []


def test_the_cli_switches_mode(tmp_path: Path) -> None:
    _model(tmp_path, "m.identity", None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = [sys.executable, "-m", "tritonforge.cli", "validate", str(tmp_path)]
    assert subprocess.run(run, capture_output=True, env=env, timeout=120).returncode == 1
    assert subprocess.run([*run, "--auto-complete"], capture_output=True, env=env, timeout=120).returncode == 0


def test_which_backends_an_image_ships() -> None:
    from tritonforge.validation.backends import image_backends

    assert image_backends(None) is None and image_backends("registry.local/triton:custom") is None
    assert image_backends("nvcr.io/nvidia/tritonserver:25.06-trtllm-python-py3") == {"python", "tensorrtllm"}
    assert "onnxruntime" in (image_backends("nvcr.io/nvidia/tritonserver:25.06-py3") or set())
    assert "onnxruntime" not in (image_backends("nvcr.io/nvidia/tritonserver:24.02-py3") or {"onnxruntime"})
    assert image_backends("nvcr.io/nvidia/tritonserver:26.07-vllm-python-py3") == {"python", "vllm"}


def test_the_python_stand_in_refuses_inference_apis() -> None:
    import importlib.util

    from tritonforge.validation.python_autocomplete import STAND_IN

    spec = importlib.util.spec_from_file_location("pb_stand_in", STAND_IN / "triton_python_backend_utils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.ModelConfig('{"name": "m", "max_batch_size": 0, "input": [], "output": []}')
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [2]})
    assert config.as_dict()["input"] == [{"name": "A", "data_type": "TYPE_FP32", "dims": [2]}]
    with pytest.raises(NotImplementedError):
        module.InferenceResponse([])


# ---------------------------------------------------------------- what the build wrote


def test_a_version_folder_cut_short_or_missing_a_file_fails_its_load(tmp_path: Path) -> None:
    """A model.onnx truncated by an interrupted copy passed validate and failed only when Triton loaded it
    (operations audit): the build records each version folder's file sizes in lineage.json, and validate compares."""
    import json

    from tritonforge.lineage import LINEAGE_FILE, lineage_bytes, record_files

    config = 'name: "m"\nbackend: "python"\n' + IO
    model = _model(tmp_path, "m", config, {"1/model.py": "# the model\n", "1/weights/a.bin": "x" * 1000})
    (model / "1" / LINEAGE_FILE).write_bytes(lineage_bytes({"spec": "s"}))
    record_files(model / "1")
    recorded = json.loads((model / "1" / LINEAGE_FILE).read_text())
    assert recorded["files"] == {"model.py": 12, "weights/a.bin": 1000} and recorded["spec"] == "s"
    (model / "1" / "__pycache__").mkdir()  # what serving writes is not the build's
    (model / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"bytecode")
    assert _messages(tmp_path) == []
    (model / "1" / "weights" / "a.bin").write_text("x" * 400)
    (model / "1" / "model.py").unlink()
    (message,) = _messages(tmp_path)
    assert message.startswith("model.py does not exist")  # Triton's own words come first
    (model / "1" / "model.py").write_text("# the model\n")
    (message,) = _messages(tmp_path)
    assert message.startswith("version 1 of model 'm' is not what the build wrote (weights/a.bin is 400 bytes, the "
                              "build wrote 1,000): a copy cut short")
    (model / "1" / "weights" / "a.bin").unlink()
    assert "weights/a.bin is missing" in _messages(tmp_path)[0]
    (model / "1" / LINEAGE_FILE).write_bytes(lineage_bytes({"spec": "s"}))  # an edit kept: no record, no check
    assert _messages(tmp_path) == []
