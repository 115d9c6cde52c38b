"""The offline repository validator: Triton's own QA cases, then hand-written cases per rule family."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import text_format
from validator_cases import WARMUP_REQUEST_CASES, warmup_request_repo

from tritonforge.config_io import model_config_pb2
from tritonforge.errors import OptionError, ValidationError
from tritonforge.validator import RateLimit, RateLimitResource, check_config, check_repository, validate

QA_ROOT = Path("/work/shared/triton-qa")
QA_CASES = QA_ROOT / "noautofill_platform"
QA_MISSING = f"Triton QA cases not found at {QA_CASES} (shared reference data)"
QA_NAMES = (
    sorted(p.name for p in QA_CASES.iterdir() if p.is_dir() and any(p.glob("expected*"))) if QA_CASES.is_dir() else []
)

Tensor = tuple[str, str, Iterable[int]]
Step = tuple[str, dict[str, str], dict[str, str]]


# ---------------------------------------------------------------- helpers


def _bre(pattern: str) -> re.Pattern[str]:
    """A grep basic regular expression as a Python regex: `\\x` is a literal x, `.`/`*`/`^`/`$` keep their meaning."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(char if char in ".*^$" else re.escape(char))
        i += 1
    return re.compile("".join(out))


def _lines(repo: Path, gpus: int | None = 8) -> list[str]:
    return [str(p) for p in check_repository(repo, gpus=gpus)]


def _messages(repo: Path, model: str, gpus: int | None = 8) -> list[str]:
    where = str(repo / model / "config.pbtxt")
    return [p.message for p in check_repository(repo, gpus=gpus) if p.where == where]


def _tensors(kind: str, tensors: Iterable[Tensor]) -> str:
    return "".join(f'{kind} {{ name: "{n}" data_type: {t} dims: {list(d)} }}\n' for n, t, d in tensors)


def _python(name: str, inputs: Iterable[Tensor], outputs: Iterable[Tensor], *, mbs: int = 8, extra: str = "") -> str:
    head = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {mbs}\n'
    return head + _tensors("input", inputs) + _tensors("output", outputs) + extra


def _ensemble(
    name: str,
    inputs: Iterable[Tensor],
    outputs: Iterable[Tensor],
    steps: Iterable[Step],
    *,
    mbs: int = 8,
    version: int = -1,
    extra: str = "",
) -> str:
    body = ""
    for model, input_map, output_map in steps:
        maps = "".join(f'input_map {{ key: "{k}" value: "{v}" }} ' for k, v in input_map.items())
        maps += "".join(f'output_map {{ key: "{k}" value: "{v}" }} ' for k, v in output_map.items())
        body += f'step {{ model_name: "{model}" model_version: {version} {maps}}}\n'
    head = f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {mbs}\n'
    return (
        head + _tensors("input", inputs) + _tensors("output", outputs) + f"ensemble_scheduling {{\n{body}}}\n" + extra
    )


def _write(repo: Path, name: str, config: str, *, versions: Iterable[str] = ("1",), files: Iterable[str] = ()) -> Path:
    model = repo / name
    model.mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)
    for version in versions:
        (model / version).mkdir()
        for filename in files:
            (model / version / filename).write_text("# model\n")
    return model


def _py(repo: Path, name: str, inputs: Iterable[Tensor], outputs: Iterable[Tensor], **kwargs: object) -> Path:
    return _write(repo, name, _python(name, inputs, outputs, **kwargs), files=["model.py"])  # type: ignore[arg-type]


def _config(text: str):  # type: ignore[no-untyped-def]
    return text_format.Parse(text, model_config_pb2().ModelConfig())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def pipeline(repo: Path) -> Path:
    """A valid two-step python pipeline: TEXT -> tok -> ids -> embed -> EMBEDDING."""
    _py(repo, "tok", [("TEXT", "TYPE_STRING", [1])], [("IDS", "TYPE_INT64", [-1])])
    _py(repo, "embed", [("IDS", "TYPE_INT64", [-1])], [("EMBEDDING", "TYPE_FP32", [384])])
    return repo


def _pipeline_ensemble(**kwargs: object) -> str:
    steps = [("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}), ("embed", {"IDS": "ids"}, {"EMBEDDING": "EMBEDDING"})]
    return _ensemble(
        "ens",
        [("TEXT", "TYPE_STRING", [1])],
        [("EMBEDDING", "TYPE_FP32", [384])],
        steps,
        **kwargs,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- Triton's own QA cases


def _qa_repo(case: Path, root: Path) -> Path:
    """Lay the case out as replay.py (and Triton's qa/L0_model_config/test.sh) does, with onnxruntime_onnx."""
    repo = root / "models"
    model = repo / case.name
    shutil.copytree(case, model, ignore=shutil.ignore_patterns("expected*"))
    config = model / "config.pbtxt"
    lines = [line for line in config.read_text().splitlines() if "platform:" not in line]
    config.write_text("\n".join(lines) + '\nplatform: "onnxruntime_onnx"\n')
    (model / "1").mkdir(exist_ok=True)
    return repo


@pytest.mark.skipif(not QA_CASES.is_dir(), reason=QA_MISSING)
@pytest.mark.parametrize("name", QA_NAMES)
def test_triton_qa_case_is_rejected_with_its_message(name: str, tmp_path: Path) -> None:
    case = QA_CASES / name
    lines = _lines(_qa_repo(case, tmp_path))
    assert lines, f"{name} was accepted"
    patterns = [_bre(p.read_text().strip()) for p in sorted(case.glob("expected*"))]
    assert any(p.search(line) for p in patterns for line in lines), lines


@pytest.mark.skipif(not QA_CASES.is_dir(), reason=QA_MISSING)
def test_replay_script_passes_every_case() -> None:
    bindir = Path(sys.executable).parent
    if shutil.which("tritonforge", path=str(bindir)) is None:
        pytest.skip(f"the tritonforge command is not installed next to {sys.executable}")
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [sys.executable, str(QA_ROOT / "replay.py")],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip().endswith(f"{len(QA_NAMES)} passed, 0 failed"), result.stdout + result.stderr
    assert result.returncode == 0


# ---------------------------------------------------------------- a valid repository


def test_valid_ensemble_and_python_models_pass(pipeline: Path) -> None:
    _write(pipeline, "ens", _pipeline_ensemble())
    assert check_repository(pipeline) == []
    validate(pipeline)


def test_validate_raises_with_every_problem(repo: Path) -> None:
    _write(repo, "a", 'name: "a"\nbackend: "python"\nmax_batch_size: -1\n')
    _write(repo, "b", 'name: "wrong"\nbackend: "python"\n', files=["model.py"])
    with pytest.raises(ValidationError) as info:
        validate(repo)
    wheres = [p.where for p in info.value.problems]
    assert wheres == sorted(wheres)
    assert str(repo / "a" / "config.pbtxt") in wheres
    assert str(repo / "b" / "config.pbtxt") in wheres
    messages = [p.message for p in info.value.problems]
    assert "'max_batch_size' must be non-negative value for a" in messages
    assert any(m.startswith("model.py does not exist in the model repository path: ") for m in messages)
    assert "unexpected directory name 'b' for model 'wrong', directory name must equal model name" in messages


# ---------------------------------------------------------------- layout and versions (R1, R4, R5)


def test_missing_config_says_auto_complete_is_never_used(repo: Path) -> None:
    (repo / "m" / "1").mkdir(parents=True)
    [problem] = check_repository(repo)
    assert problem.where == str(repo / "m")
    assert problem.message.startswith(f"failed to open text file for read {repo / 'm' / 'config.pbtxt'}")
    assert "auto-complete" in problem.message


def test_syntax_error_uses_tritons_wording(repo: Path) -> None:
    _write(repo, "m", 'name: "m"\nbackend: "python"\nmax_batch_size: "eight"\n', files=["model.py"])
    [problem] = check_repository(repo)
    assert problem.message.startswith(f"failed to read text proto from {repo / 'm' / 'config.pbtxt'}")


def test_version_folders_with_leading_zeros_or_letters_are_ignored(repo: Path) -> None:
    _write(repo, "m", _python("m", [], []), versions=["003", "abc"], files=["model.py"])
    [message] = _messages(repo, "m")
    assert message.startswith("at least one version must be available under the version policy of model 'm'")
    assert "ignore version directory '003' which contains leading zeros in its directory name" in message
    assert "ignore version directory 'abc' which fails to convert to integral number" in message


def test_reserved_folders_are_not_versions(repo: Path) -> None:
    _write(repo, "m", _python("m", [], []), versions=["warmup", "initial_state", "configs", "2"], files=["model.py"])
    assert _messages(repo, "m") == []


def test_only_versions_selected_by_the_policy_need_model_py(repo: Path) -> None:
    model = _write(repo, "m", _python("m", [], []), versions=["1", "2"])
    (model / "2" / "model.py").write_text("")
    assert _messages(repo, "m") == []  # latest 1 loads only version 2
    (model / "config.pbtxt").write_text(_python("m", [], [], extra="version_policy { all { } }\n"))
    assert _messages(repo, "m") == [f"model.py does not exist in the model repository path: {model / '1' / 'model.py'}"]


def test_specific_version_policy_without_its_folder(repo: Path) -> None:
    _write(repo, "m", _python("m", [], [], extra="version_policy { specific { versions: [3] } }\n"), files=["model.py"])
    [message] = _messages(repo, "m")
    assert message.startswith("at least one version must be available under the version policy of model 'm'")
    assert "version 3 is specified for model 'm', but the version directory is not present" in message


def test_default_model_filename_replaces_model_py(repo: Path) -> None:
    _write(repo, "m", _python("m", [], [], extra='default_model_filename: "main.py"\n'), files=["main.py"])
    assert _messages(repo, "m") == []


def test_onnx_model_file_is_required(repo: Path) -> None:
    model = _write(repo, "enc", 'name: "enc"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    assert _messages(repo, "enc") == [f"unable to find '{model / '1' / 'model.onnx'}' for model instance 'enc_0'"]
    (model / "1" / "model.onnx").mkdir()
    (model / "1" / "model.onnx" / "model.onnx").write_bytes(b"onnx")  # a large model stored as a directory
    assert _messages(repo, "enc") == []


# ---------------------------------------------------------------- platform / backend (R7-R10)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('platform: "onnxruntime"', "unexpected platform type 'onnxruntime' for m"),
        (
            'platform: "ensemble"\nbackend: "python"',
            "Ensemble model 'm' must have platform type 'ensemble' and empty backend type",
        ),
        (
            'platform: "tensorrt_plan"\nbackend: "onnxruntime"',
            "unexpected 'platform' and 'backend' pair, got:tensorrt_plan, onnxruntime",
        ),
        ('platform: "libtorch"', "unexpected 'platform' and 'backend' pair, got:libtorch, pytorch"),
        (
            "max_batch_size: 1",
            "Invalid model name: Could not determine backend for model 'm' with no backend in model configuration. "
            "Expected model name of the form 'model.<backend_name>'.",
        ),
    ],
)
def test_platform_and_backend(repo: Path, config: str, message: str) -> None:
    _write(repo, "m", f'name: "m"\n{config}\n')
    assert message in _messages(repo, "m")


def test_backend_is_inferred_from_the_first_version_folder(repo: Path) -> None:
    _write(repo, "m", 'name: "m"\nmax_batch_size: 1\n', files=["model.py"])
    assert _messages(repo, "m") == []


# ---------------------------------------------------------------- single-config rules through check_config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('input { name: "x" data_type: TYPE_FP32 }', "model input 'x' must specify 'dims' for m"),
        (
            'output { name: "y" data_type: TYPE_FP32 dims: [0] }',
            "model output 'y' dimension must be integer >= 1, or -1 to indicate a variable-size dimension for m",
        ),
        ("input { data_type: TYPE_FP32 dims: [1] }", "model input must specify 'name' for m"),
        (
            'input { name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [3, 224] }',
            "model input NHWC/NCHW require 3 dims for m",
        ),
        (
            'input { name: "x" data_type: TYPE_INT32 dims: [1] is_shape_tensor: true }',
            "shape tensors are only supported for TensorRT platform for m",
        ),
        (
            'output { name: "y" data_type: TYPE_FP32 dims: [1] is_non_linear_format_io: true }',
            "Non-linear IO format is only supported for the TensorRT platform for m",
        ),
        (
            'batch_input { kind: BATCH_ELEMENT_COUNT target_name: "b" data_type: TYPE_INT64 source_input: "x" }',
            "batch input data type must be TYPE_INT32 or TYPE_FP32 for m",
        ),
        (
            "dynamic_batching { preferred_batch_size: [4, 16] }",
            "dynamic batching preferred size must be <= max batch size for m",
        ),
        ("dynamic_batching { preferred_batch_size: [0] }", "dynamic batching preferred size must be positive for m"),
        (
            'sequence_batching { control_input { name: "CORRID"'
            " control { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 } } }",
            "unexpected data type for control CONTROL_SEQUENCE_CORRID for m. Allowed data types are TYPE_UINT64, "
            "TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING",
        ),
        (
            'sequence_batching { control_input { name: "C"'
            " control { kind: CONTROL_SEQUENCE_CORRID int32_false_true: [0, 1] } } }",
            "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' "
            "for CONTROL_SEQUENCE_CORRID for m",
        ),
        (
            'sequence_batching { control_input { name: "S"'
            " control { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1, 2] } } }",
            "sequence batching control 'int32_false_true' must have exactly 2 entries for CONTROL_SEQUENCE_START for m",
        ),
        (
            "sequence_batching { oldest { preferred_batch_size: [9] } }",
            "sequence batching preferred batch size must be <= max batch size for m",
        ),
        (
            "sequence_batching { direct { minimum_slot_utilization: 1.5 } }",
            "sequence batching minimum slot utilization must be in range (0.0, 1.0] for m",
        ),
        (
            "sequence_batching { }\nresponse_cache { enable: true }",
            "Response Cache does not currently support model m with sequence batching scheduler. Please disable the "
            "response cache.",
        ),
        (
            "model_transaction_policy { decoupled: true }\nresponse_cache { enable: true }",
            "Response Cache does not currently support model m with 'decoupled' transaction policy. Please disable the "
            "response cache.",
        ),
        (  # R33: a control tensor needs a name
            "sequence_batching { control_input { control { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } } }",
            "sequence batching control tensor must have a name for m",
        ),
        (  # R33: one tensor named by two control_input entries
            'sequence_batching { control_input { name: "S" control { kind: CONTROL_SEQUENCE_START '
            'int32_false_true: [0, 1] } } control_input { name: "S" control { kind: CONTROL_SEQUENCE_END '
            "int32_false_true: [0, 1] } } }",
            "sequence batching control tensor 'S' is specified for multiple control kinds for m",
        ),
        (  # R33: one kind on two tensors
            'sequence_batching { control_input { name: "S" control { kind: CONTROL_SEQUENCE_READY '
            'int32_false_true: [0, 1] } } control_input { name: "T" control { kind: CONTROL_SEQUENCE_READY '
            "int32_false_true: [0, 1] } } }",
            "sequence batching specifies multiple CONTROL_SEQUENCE_READY tensors for m",
        ),
        (  # R34: a boolean control without its false/true values
            'sequence_batching { control_input { name: "R" control { kind: CONTROL_SEQUENCE_READY } } }',
            "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for "
            "CONTROL_SEQUENCE_READY for m",
        ),
        (  # R34: two of the lists
            'sequence_batching { control_input { name: "E" control { kind: CONTROL_SEQUENCE_END '
            "int32_false_true: [0, 1] fp32_false_true: [0, 1] } } }",
            "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and "
            "'bool_false_true' for CONTROL_SEQUENCE_END for m",
        ),
        (  # R67
            'model_metrics { metric_control { metric_identifier { family: "" } histogram_options { buckets: [1] } } }',
            "metric identifier must specify non-empty 'family'",
        ),
        (
            'model_metrics { metric_control { metric_identifier { family: "f" } histogram_options { } } }',
            "histogram options must specify non-empty 'buckets'",
        ),
        (
            'model_metrics { metric_control { metric_identifier { family: "f" } } }',
            "metric control must specify 'histogram_options'",
        ),
        (
            "model_metrics { metric_control { histogram_options { buckets: [1] } } }",
            "metric control must specify 'metric_identifier'",
        ),
        (
            'ensemble_scheduling { step { model_name: "x" } }',
            "ensemble scheduling cannot be set for model 'm' whose platform is not ensemble",
        ),
        (
            "instance_group { kind: KIND_MODEL gpus: [0] }",
            "instance group m_0 of model m has kind KIND_MODEL but specifies one or more GPUs",
        ),
        (
            'instance_group { kind: KIND_CPU profile: "0" }',
            "instance group m_0 of model m and platform specifies profile field which is only supported for "
            "TensorRT models",
        ),
    ],
)
def test_single_config_rule(text: str, message: str) -> None:
    config = _config(f'name: "m"\nbackend: "python"\nmax_batch_size: 8\n{text}')
    assert message in check_config(config)


def test_check_config_without_a_folder_needs_a_name_and_leaves_the_config_untouched() -> None:
    config = _config('backend: "python"\nmax_batch_size: 8\n')
    before = config.SerializeToString()
    assert check_config(config) == ["model configuration must specify 'name'"]
    assert config.SerializeToString() == before


def test_check_config_with_a_folder_checks_the_layout(tmp_path: Path) -> None:
    config = _config('name: "other"\nbackend: "python"\n')
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    messages = check_config(config, model_dir=folder)
    assert "unexpected directory name 'm' for model 'other', directory name must equal model name" in messages
    assert f"model.py does not exist in the model repository path: {folder / '1' / 'model.py'}" in messages


# ---------------------------------------------------------------- instance groups and rate limiter (R40-R44)


def test_gpu_ids_are_checked_against_the_target_machine(repo: Path) -> None:
    _write(repo, "m", _python("m", [], [], extra="instance_group { kind: KIND_GPU gpus: [3] }\n"), files=["model.py"])
    [message] = _messages(repo, "m", gpus=2)
    assert message == (
        "instance group m_0 of model m specifies invalid or unsupported gpu id 3. GPUs with at least the minimum "
        "required CUDA compute compatibility of 6.000000 are: 0, 1"
    )
    assert _messages(repo, "m", gpus=4) == []
    assert _messages(repo, "m", gpus=None) == []


def test_kind_gpu_on_a_machine_without_gpus(repo: Path) -> None:
    extra = 'instance_group { name: "g" kind: KIND_GPU }\ninstance_group { kind: KIND_AUTO }\n'
    _write(repo, "m", _python("m", [], [], extra=extra), files=["model.py"])
    assert _messages(repo, "m", gpus=0) == ["instance group g of model m has kind KIND_GPU but no GPUs are available"]


def _limited(repo: Path, model: str, mode: str = "execution_count", *resources: str) -> list[str]:
    where = str(repo / model / "config.pbtxt")
    found = check_repository(repo, rate_limit=RateLimit.from_options(mode, resources))
    return [p.message for p in found if p.where == where]


def _resources(*resources: tuple[str, bool, int], kind: str = "KIND_CPU", gpus: str = "") -> str:
    listed = "".join(f'resources {{ name: "{n}" global: {str(g).lower()} count: {c} }} ' for n, g, c in resources)
    return f"instance_group {{ kind: {kind} {gpus} rate_limiter {{ {listed}}} }}\n"


def test_rate_limiter_resource_global_and_per_device_across_models(repo: Path) -> None:
    _py(repo, "a", [], [], extra=_resources(("R", True, 1)))
    _py(repo, "b", [], [], extra=_resources(("R", False, 1)))
    _py(repo, "c", [], [], extra=_resources(("S", False, 1)))
    message = 'Resource "R" is present as both global and device-specific resource in the model configuration.'
    assert _limited(repo, "a") == [message]
    assert _limited(repo, "b") == [message]
    assert _limited(repo, "c") == []
    # Triton's default --rate-limit=off registers no resources (how tritonforge serves): the repository loads
    assert _lines(repo) == []
    assert _limited(repo, "a", "off") == []


def test_rate_limiter_explicit_resource_counts(repo: Path) -> None:
    _py(repo, "cpu", [], [], extra=_resources(("R", False, 4), ("G", True, 2)))
    _py(repo, "gpu", [], [], extra=_resources(("R", False, 3), kind="KIND_GPU", gpus="gpus: [1]"))
    _py(repo, "small", [], [], extra=_resources(("R", False, 1)))

    def limited(count: int, need: int, name: str = "R") -> str:
        return (
            f'Resource count for "{name}" is limited to {count} which will prevent scheduling of one or more model '
            f"instances, the minimum required count is {need}"
        )

    # per-device (no device given) counts for every device; a model is judged on its own instances
    assert _limited(repo, "cpu", "execution_count", "R:2", "G:2") == [limited(2, 4)]
    assert _limited(repo, "gpu", "execution_count", "R:2", "G:2") == [limited(2, 3)]
    assert _limited(repo, "small", "execution_count", "R:2", "G:2") == []
    # an unlisted resource has no copies
    assert _limited(repo, "cpu", "execution_count", "R:4") == [limited(0, 2, "G")]
    # device-specific counts: KIND_CPU instances are device 0, a KIND_GPU instance its GPU; a global resource takes
    # the largest count given for its name on any device
    assert _limited(repo, "cpu", "execution_count", "R:4:0", "R:1:1", "G:5:3") == []
    assert _limited(repo, "gpu", "execution_count", "R:4:0", "R:1:1", "G:5:3") == [limited(1, 3)]
    assert _limited(repo, "gpu", "execution_count", "R:1", "R:3:1") == []


def test_validate_command_takes_the_servers_rate_limit_flags(repo: Path) -> None:
    from typer.testing import CliRunner

    from tritonforge.cli import app

    _py(repo, "m", [], [], extra=_resources(("R", False, 4)))
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(repo)]).exit_code == 0
    limited = runner.invoke(
        app, ["validate", str(repo), "--rate-limit", "execution_count", "--rate-limit-resource", "R:1"]
    )
    assert limited.exit_code == 1
    assert f'{repo / "m" / "config.pbtxt"}: Resource count for "R" is limited to 1' in limited.output
    ok = ["validate", str(repo), "--rate-limit", "execution_count", "--rate-limit-resource", "R:4:0"]
    assert runner.invoke(app, ok).exit_code == 0
    bad_flag = ["validate", str(repo), "--rate-limit", "execution_count", "--rate-limit-resource", "R"]
    bad = runner.invoke(app, bad_flag, env={"COLUMNS": "200"})
    assert bad.exit_code == 1
    assert "expected '<name>:<count>' or '<name>:<count>:<device>'" in bad.output


def test_rate_limit_options_are_checked() -> None:
    assert RateLimitResource.parse("R:4") == RateLimitResource("R", 4, None)
    assert RateLimitResource.parse("R:4:1") == RateLimitResource("R", 4, 1)
    for bad, says in [
        ("R", "expected '<name>:<count>' or '<name>:<count>:<device>'"),
        ("R:4:1:2", "expected '<name>:<count>'"),
        (":4", "expected '<name>:<count>'"),
        ("R:four", "count and device must be integers"),
        ("R:-1", "count -1 must be 0 or more"),
        ("R:1:-3", "device -3 must be a device id"),
    ]:
        with pytest.raises(OptionError, match=re.escape(says)):
            RateLimitResource.parse(bad)
    with pytest.raises(OptionError, match="allowed are off, execution_count"):
        RateLimit.from_options("on")
    with pytest.raises(OptionError, match="--rate-limit-resource needs --rate-limit=execution_count"):
        RateLimit.from_options("off", ["R:1"])
    assert issubclass(OptionError, ValueError)


# ---------------------------------------------------------------- files read at load (R23, R37, R68)


def test_label_file_outside_the_model_folder(repo: Path) -> None:
    extra = 'output { name: "y" data_type: TYPE_FP32 dims: [2] label_filename: "../labels.txt" }\n'
    _write(repo, "m", _python("m", [], [], extra=extra), files=["model.py"])
    assert _messages(repo, "m") == [
        "label file path '../labels.txt' for output 'y' in model 'm' is outside model directory"
    ]


def _warmup(name: str, batch_size: int, data: str) -> str:
    value = f"{{ data_type: TYPE_FP32 {data} }}"
    return f'model_warmup {{ name: "{name}" batch_size: {batch_size} inputs {{ key: "x" value: {value} }} }}\n'


def test_warmup_samples(repo: Path) -> None:
    extra = (
        'input { name: "x" data_type: TYPE_FP32 dims: [-1] }\n'
        + _warmup("w", 1, "dims: [-1] zero_data: true")
        + _warmup("v", 1, "dims: [4]")
        + _warmup("f", 1, 'dims: [4] input_data_file: "x.bin"')
        + _warmup("skipped", 0, "dims: [-1]")
    )
    model = _write(repo, "m", _python("m", [], [], extra=extra), files=["model.py"])
    assert _messages(repo, "m") == [
        "warmup setting expects all variable-size dimensions are specified for input 'x'",
        "warmup setting expects input 'x' to have input_data_type set",
        f"failed to open text file for read {model / 'warmup' / 'x.bin'}: No such file or directory",
    ]
    (model / "warmup").mkdir()
    (model / "warmup" / "x.bin").write_bytes(b"\0" * 8)
    assert (
        _messages(repo, "m")[-1] == "warmup setting expects 16 bytes, but the data provided from x.binonly has 8 bytes"
    )


def test_sequence_batching_implicit_state(repo: Path) -> None:
    extra = (
        "sequence_batching {\n"
        '  state { input_name: "a" output_name: "a_out" data_type: TYPE_FP32 dims: [2]'
        '    initial_state { name: "init" data_type: TYPE_INT32 dims: [2] zero_data: true } }\n'
        '  state { input_name: "b" output_name: "b_out" data_type: TYPE_FP32 dims: [-1]'
        '    initial_state { name: "init" data_type: TYPE_FP32 dims: [-1] zero_data: true } }\n'
        '  state { input_name: "c" output_name: "c_out" data_type: TYPE_FP32 dims: [2, 2]'
        '    initial_state { name: "init" data_type: TYPE_FP32 dims: [2] zero_data: true } }\n'
        "}\n"
    )
    _write(repo, "m", _python("m", [], [], extra=extra), files=["model.py"])
    assert _messages(repo, "m") == [
        "The data type used for 'initial_state' field of state 'a' does not match the state data type.",
        "'initial_state' field for state input name 'b' contains variable dimensions.",
        "Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state input 'c'. "
        "1 != 2",
    ]


def test_sequence_batching_initial_state_entries(repo: Path) -> None:
    def state(name: str, dims: str, *initial: str) -> str:
        inits = "".join(f"initial_state {{ {i} data_type: TYPE_FP32 dims: {dims} zero_data: true }} " for i in initial)
        return f'  state {{ input_name: "{name}" output_name: "{name}_out" data_type: TYPE_FP32 dims: [2] {inits}}}\n'

    extra = (
        "sequence_batching {\n"
        + state("many", "[2]", 'name: "i"', 'name: "j"')
        + state("unnamed", "[2]", "")
        + state("dup", "[2]", 'name: "i"')
        + state("dup", "[2]", 'name: "i"')
        + state("wrong", "[3]", 'name: "i"')
        + "}\n"
    )
    _write(repo, "m", _python("m", [], [], extra=extra), files=["model.py"])
    assert _messages(repo, "m") == [
        "initial_state field for state input 'many' must contain exactly one or zero element. Found '2' elements.",
        "Field 'name' must be set when using initial_state for state input 'unnamed'.",
        "State input name 'dup' specified more than once.",
        "'initial_state' dim for input name 'wrong' doesn't match 'state' dim description. 3 != 2",
    ]


# ---------------------------------------------------------------- ensembles, single config (R46-R51)


def test_ensemble_tensor_produced_twice(pipeline: Path) -> None:
    steps = [("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}), ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"})]
    _write(pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("ids", "TYPE_INT64", [-1])], steps))
    assert _messages(pipeline, "ens") == [
        "ensemble tensor 'ids' can appear in an output map only once for ensemble 'ens' step 1"
    ]


def test_ensemble_output_not_reachable_from_the_inputs(pipeline: Path) -> None:
    steps = [("embed", {"IDS": "ids"}, {"EMBEDDING": "EMBEDDING"})]
    inputs = [("TEXT", "TYPE_STRING", [1])]
    _write(pipeline, "ens", _ensemble("ens", inputs, [("EMBEDDING", "TYPE_FP32", [384])], steps))
    assert _messages(pipeline, "ens") == [
        "ensemble input 'TEXT' for ensemble ens' is not used",
        "output 'EMBEDDING' for ensemble 'ens' is not written: at least one of its depending tensors, 'ids', is "
        "not connected",
    ]


def test_cycle_inside_one_ensemble_is_never_written(pipeline: Path) -> None:
    _py(pipeline, "mix", [("A", "TYPE_INT64", [-1]), ("B", "TYPE_INT64", [-1])], [("C", "TYPE_INT64", [-1])])
    steps = [
        ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}),
        ("mix", {"A": "ids", "B": "loop"}, {"C": "loop"}),
        ("embed", {"IDS": "loop"}, {"EMBEDDING": "EMBEDDING"}),
    ]
    _write(
        pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [384])], steps)
    )
    assert _messages(pipeline, "ens") == [
        "output 'EMBEDDING' for ensemble 'ens' is not written: at least one of its depending tensors, 'loop', is "
        "not connected"
    ]


def test_intermediate_tensor_never_consumed(pipeline: Path) -> None:
    steps = [
        ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}),
        ("tok", {"TEXT": "TEXT"}, {"IDS": "spare"}),
        ("embed", {"IDS": "ids"}, {"EMBEDDING": "EMBEDDING"}),
    ]
    _write(
        pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [384])], steps)
    )
    assert _messages(pipeline, "ens") == ["ensemble tensor 'spare' is unused in ensemble 'ens'"]


def test_ensemble_must_not_set_instance_groups_or_lack_steps(repo: Path) -> None:
    _write(
        repo, "ens", 'name: "ens"\nplatform: "ensemble"\ninstance_group { kind: KIND_CPU }\nensemble_scheduling { }\n'
    )
    assert _messages(repo, "ens") == [
        "instance group should not be specified for ensemble 'ens'",
        "must specify 'step' for ensemble 'ens'",
    ]


def test_ensemble_platform_without_scheduling(repo: Path) -> None:
    _write(repo, "ens", 'name: "ens"\nplatform: "ensemble"\n')
    assert _messages(repo, "ens") == ["ensemble scheduling must be set for ensemble ens whose platform is ensemble"]


def test_ensemble_must_not_set_optimization_or_warmup(pipeline: Path) -> None:
    warmup = 'model_warmup { name: "w" batch_size: 1 inputs { key: "TEXT" value: { data_type: TYPE_STRING dims: [1] '
    extra = f"optimization {{ priority: PRIORITY_MAX }}\n{warmup}zero_data: true }} }} }}\n"
    _write(pipeline, "ens", _pipeline_ensemble(extra=extra))
    assert _messages(pipeline, "ens") == [
        "optimization should not be specified for ensemble 'ens'",
        "model_warmup can not be specified for ensemble 'ens'",
    ]


def test_ensemble_needs_a_version_folder(pipeline: Path) -> None:
    _write(pipeline, "ens", _pipeline_ensemble(), versions=[])
    assert _messages(pipeline, "ens") == [
        "at least one version must be available under the version policy of model 'ens'"
    ]


# ---------------------------------------------------------------- ensembles across models (R53-R63)


def test_wrong_dtype_between_two_steps(repo: Path) -> None:
    _py(repo, "tok", [("TEXT", "TYPE_STRING", [1])], [("IDS", "TYPE_FP32", [-1])])
    _py(repo, "embed", [("IDS", "TYPE_INT32", [-1])], [("EMBEDDING", "TYPE_FP32", [384])])
    _write(repo, "ens", _pipeline_ensemble())
    assert _lines(repo) == [
        f"{repo / 'ens' / 'config.pbtxt'}: in ensemble ens, ensemble tensor ids: inconsistent data type: TYPE_FP32 is "
        "inferred from model tok while TYPE_INT32 is inferred from model embed"
    ]


def test_shape_mismatch_between_two_steps(repo: Path) -> None:
    _py(repo, "tok", [("TEXT", "TYPE_STRING", [1])], [("IDS", "TYPE_INT64", [16])])
    _py(repo, "embed", [("IDS", "TYPE_INT64", [16, 16])], [("EMBEDDING", "TYPE_FP32", [384])])
    _write(repo, "ens", _pipeline_ensemble())
    assert _messages(repo, "ens") == [
        "in ensemble ens, ensemble tensor ids: inconsistent shape: [-1,16] is inferred from model tok while "
        "[-1,16,16] is inferred from model embed"
    ]


def test_non_batching_step_may_carry_the_batch_dimension_explicitly(repo: Path) -> None:
    _py(repo, "tok", [("TEXT", "TYPE_STRING", [1])], [("IDS", "TYPE_INT64", [16])])
    _py(repo, "embed", [("IDS", "TYPE_INT64", [-1, 16])], [("EMBEDDING", "TYPE_FP32", [-1, 384])], mbs=0)
    _write(repo, "ens", _pipeline_ensemble())
    assert _lines(repo) == []


def test_ensemble_output_shape_must_match_the_producer(pipeline: Path) -> None:
    steps = [("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}), ("embed", {"IDS": "ids"}, {"EMBEDDING": "EMBEDDING"})]
    _write(
        pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [768])], steps)
    )
    assert _messages(pipeline, "ens") == [
        "in ensemble ens, ensemble tensor EMBEDDING: inconsistent shape: [-1,768] is inferred from model ens while "
        "[-1,384] is inferred from model embed"
    ]


def test_missing_composing_models_are_listed(pipeline: Path) -> None:
    steps = [
        ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}),
        ("zeta", {"IDS": "ids"}, {"E": "mid"}),
        ("alpha", {"X": "mid"}, {"E": "OUT"}),
    ]
    _write(pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("OUT", "TYPE_FP32", [1])], steps))
    assert _messages(pipeline, "ens") == [
        "ensemble ens contains models that are not available or ambiguous: alpha, zeta"
    ]


def test_composing_model_that_fails_to_poll_is_not_available(pipeline: Path) -> None:
    (pipeline / "embed" / "config.pbtxt").write_text(_python("embed", [], [], mbs=-1))
    _write(pipeline, "ens", _pipeline_ensemble())
    assert _messages(pipeline, "ens") == ["ensemble ens contains models that are not available or ambiguous: embed"]


def test_composing_model_that_fails_to_load(pipeline: Path) -> None:
    (pipeline / "embed" / "1" / "model.py").unlink()
    _write(pipeline, "ens", _pipeline_ensemble())
    missing = pipeline / "embed" / "1" / "model.py"
    assert _messages(pipeline, "ens") == [
        "ensemble 'ens' depends on 'embed' which has no loaded version. Model 'embed' loading failed with error: "
        f"model.py does not exist in the model repository path: {missing}"
    ]


def test_omitted_model_version_requires_version_zero(pipeline: Path) -> None:
    _write(pipeline, "ens", _pipeline_ensemble().replace("model_version: -1", ""))
    assert _messages(pipeline, "ens") == [
        "ensemble 'ens' depends on 'tok' whose required version 0 is not loaded.",
        "ensemble 'ens' depends on 'embed' whose required version 0 is not loaded.",
    ]


def test_composing_max_batch_size_too_small(pipeline: Path) -> None:
    _write(pipeline, "ens", _pipeline_ensemble(mbs=16))
    assert _messages(pipeline, "ens") == [
        f"ensemble ens allows maximum batch size 16, but it contains model {m} which only allows maximum batch size "
        "to be 8"
        for m in ("tok", "embed")
    ]


def test_unmapped_input_of_a_composing_model(pipeline: Path) -> None:
    _py(pipeline, "two", [("A", "TYPE_INT64", [-1]), ("B", "TYPE_INT64", [-1])], [("EMBEDDING", "TYPE_FP32", [384])])
    steps = [("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}), ("two", {"A": "ids"}, {"EMBEDDING": "EMBEDDING"})]
    _write(
        pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [384])], steps)
    )
    assert _messages(pipeline, "ens") == ["in ensemble ens, input B in model two is not mapped to any ensemble tensors"]


def test_optional_inputs_may_stay_unmapped(pipeline: Path) -> None:
    extra = 'input { name: "B" data_type: TYPE_INT64 dims: [-1] optional: true }\n'
    _py(pipeline, "two", [("A", "TYPE_INT64", [-1])], [("EMBEDDING", "TYPE_FP32", [384])], extra=extra)
    steps = [("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}), ("two", {"A": "ids"}, {"EMBEDDING": "EMBEDDING"})]
    _write(
        pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [384])], steps)
    )
    assert _lines(pipeline) == []


def test_unknown_input_and_output_keys(pipeline: Path) -> None:
    steps = [
        ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}),
        ("embed", {"IDS": "ids", "MASK": "TEXT"}, {"VECTOR": "EMBEDDING"}),
    ]
    _write(
        pipeline, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [384])], steps)
    )
    assert _messages(pipeline, "ens") == [
        "in ensemble ens, ensemble tensor TEXT is mapping to non-existing input MASK in model embed",
        "in ensemble ens, ensemble tensor EMBEDDING is mapped from non-existing output VECTOR in model embed",
    ]


def test_circular_dependency_between_ensembles(pipeline: Path) -> None:
    text, out = [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP32", [384])]
    _write(pipeline, "a", _ensemble("a", text, out, [("b", {"TEXT": "TEXT"}, {"EMBEDDING": "EMBEDDING"})]))
    _write(pipeline, "b", _ensemble("b", text, out, [("a", {"TEXT": "TEXT"}, {"EMBEDDING": "EMBEDDING"})]))
    _write(pipeline, "c", _ensemble("c", text, out, [("a", {"TEXT": "TEXT"}, {"EMBEDDING": "EMBEDDING"})]))
    assert _messages(pipeline, "a") == ["circular dependency between ensembles: a -> ... -> b -> a"]
    assert _messages(pipeline, "b") == ["circular dependency between ensembles: b -> ... -> a -> b"]
    assert _messages(pipeline, "c") == [
        "ensemble 'c' depends on 'a' which is not valid. Model 'a' failed with error: circular dependency between "
        "ensembles: a -> ... -> b -> a"
    ]


def test_nested_ensembles_are_checked_against_the_inner_ensemble(pipeline: Path) -> None:
    _write(pipeline, "ens", _pipeline_ensemble())
    steps = [("ens", {"TEXT": "TEXT"}, {"EMBEDDING": "EMBEDDING"})]
    _write(
        pipeline,
        "outer",
        _ensemble("outer", [("TEXT", "TYPE_STRING", [1])], [("EMBEDDING", "TYPE_FP16", [384])], steps),
    )
    assert _messages(pipeline, "outer") == [
        "in ensemble outer, ensemble tensor EMBEDDING: inconsistent data type: TYPE_FP16 is inferred from model outer "
        "while TYPE_FP32 is inferred from model ens"
    ]


DECOUPLED = "model_transaction_policy { decoupled: true }\n"


def _streaming_models(repo: Path) -> None:
    _py(repo, "tok", [("TEXT", "TYPE_STRING", [1])], [("IDS", "TYPE_INT64", [-1])])
    _py(repo, "gen_a", [("IDS", "TYPE_INT64", [-1])], [("TOK", "TYPE_INT64", [1])], extra=DECOUPLED)
    _py(repo, "gen_b", [("IDS", "TYPE_INT64", [-1])], [("TOK", "TYPE_INT64", [1])], extra=DECOUPLED)
    _py(repo, "join", [("A", "TYPE_INT64", [1]), ("B", "TYPE_INT64", [1])], [("J", "TYPE_INT64", [1])])
    _py(repo, "detok", [("J", "TYPE_INT64", [1])], [("OUT", "TYPE_STRING", [1])])


def _rejoin_steps() -> list[Step]:
    return [
        ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}),
        ("gen_a", {"IDS": "ids"}, {"TOK": "a"}),
        ("join", {"A": "a", "B": "a"}, {"J": "j"}),
        ("detok", {"J": "j"}, {"OUT": "OUT"}),
    ]


CACHE = "response_cache { enable: true }\n"
STREAM_IO: tuple[list[Tensor], list[Tensor]] = ([("TEXT", "TYPE_STRING", [1])], [("OUT", "TYPE_STRING", [1])])


def _cache_message(model: str) -> str:
    return (
        f"Response Cache does not currently support model {model} with 'decoupled' transaction policy. Please "
        "disable the response cache."
    )


def test_step_joining_two_decoupled_producers(repo: Path) -> None:
    _streaming_models(repo)
    steps = [
        ("tok", {"TEXT": "TEXT"}, {"IDS": "ids"}),
        ("gen_a", {"IDS": "ids"}, {"TOK": "a"}),
        ("gen_b", {"IDS": "ids"}, {"TOK": "b"}),
        ("join", {"A": "a", "B": "b"}, {"J": "j"}),
        ("detok", {"J": "j"}, {"OUT": "OUT"}),
    ]
    _write(repo, "ens", _ensemble("ens", [("TEXT", "TYPE_STRING", [1])], [("OUT", "TYPE_STRING", [1])], steps))
    assert _messages(repo, "ens") == [
        "in ensemble ens, step of model 'join' receives inputs originated from different decoupled models"
    ]


def test_fan_out_from_one_decoupled_step_may_rejoin(repo: Path) -> None:
    _streaming_models(repo)
    _write(repo, "ens", _ensemble("ens", *STREAM_IO, _rejoin_steps()))
    assert _lines(repo) == []


def test_response_cache_on_an_ensemble_that_becomes_decoupled(repo: Path) -> None:
    _streaming_models(repo)
    _write(repo, "ens", _ensemble("ens", *STREAM_IO, _rejoin_steps(), extra=CACHE))
    assert _messages(repo, "ens") == [_cache_message("ens")]
    # an ensemble using it cannot load it
    _write(repo, "outer", _ensemble("outer", *STREAM_IO, [("ens", {"TEXT": "TEXT"}, {"OUT": "OUT"})]))
    assert _messages(repo, "outer") == [
        "ensemble 'outer' depends on 'ens' which has no loaded version. Model 'ens' loading failed with error: "
        + _cache_message("ens")
    ]


def test_derived_decoupled_flag_propagates_to_an_outer_ensemble(repo: Path) -> None:
    _streaming_models(repo)
    _write(repo, "ens", _ensemble("ens", *STREAM_IO, _rejoin_steps()))
    _write(repo, "outer", _ensemble("outer", *STREAM_IO, [("ens", {"TEXT": "TEXT"}, {"OUT": "OUT"})], extra=CACHE))
    assert _messages(repo, "ens") == []
    assert _messages(repo, "outer") == [_cache_message("outer")]


@pytest.mark.parametrize(
    ("runtime", "escapes"),
    [("libtriton_identity.so", False), ("sub/libx.so", False), ("../x/libtriton_identity.so", True),
     ("../../../../tmp/evil.so", True), ("/usr/lib/libevil.so", True), ("./libtriton_identity.so", False)],
)
def test_a_runtime_may_not_leave_its_backend_directory(tmp_path: Path, runtime: str, escapes: bool) -> None:
    from tritonforge.validator import check_repository

    model = tmp_path / "repo" / "m"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(
        f'name: "m"\nbackend: "identity"\nruntime: "{runtime}"\nmax_batch_size: 0\n'
        'input { name: "IN" data_type: TYPE_FP32 dims: 1 }\noutput { name: "OUT" data_type: TYPE_FP32 dims: 1 }\n'
    )
    messages = [p.message for p in check_repository(tmp_path / "repo")]
    expected = (f"backend library name '{runtime}' escapes backend directory '/opt/tritonserver/backends/identity', "
                "for model 'm', check model config runtime field")
    assert (expected in messages) == escapes, messages


def test_a_custom_batching_library_is_refused_with_the_sequence_batcher_and_outside_the_repository(
    repo: Path,
) -> None:
    """R31, both halves (core's TritonModel::Create): the sequence batcher takes no custom batching library, and the
    library's path may not leave the model repository."""
    io = [("IN", "TYPE_FP32", (4,))], [("OUT", "TYPE_FP32", (4,))]
    strategy = 'parameters { key: "TRITON_BATCH_STRATEGY_PATH" value: { string_value: "%s" } }\n'
    _py(repo, "seq", *io, extra="sequence_batching { }\n" + strategy % "libbatch.so")
    _py(repo, "escape", *io, extra="dynamic_batching { }\n" + strategy % "../../elsewhere/libbatch.so")
    _py(repo, "inside", *io, extra="dynamic_batching { }\n" + strategy % "libbatch.so")
    assert _messages(repo, "seq") == [
        "TRITON_BATCH_STRATEGY_PATH cannot be specified with sequence batcher, using default batching strategy"
    ]
    assert _messages(repo, "escape") == ["Batching library path escapes model repository."]
    assert _messages(repo, "inside") == []


@pytest.mark.parametrize("kind, expected", [
    ("KIND_CPU", ["'use_growable_memory' can only work with KIND_GPU model instances right now. Please either change "
                  "the instance type to KIND_GPU or set 'use_growable_memory' to false for state input 'S_IN'."]),
    ("KIND_GPU", []),
])
def test_growable_state_memory_needs_gpu_instances(repo: Path, kind: str, expected: list[str]) -> None:
    """R37 (core's SequenceStates::Initialize): a growable state buffer works on KIND_GPU instances only."""
    state = ('sequence_batching { state { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 dims: [ 4 ] '
             "use_same_buffer_for_input_output: true use_growable_memory: true } }\n")
    group = f"instance_group {{ kind: {kind} count: 1 }}\n"
    _py(repo, "m", [("IN", "TYPE_FP32", (4,))], [("OUT", "TYPE_FP32", (4,))], extra=state + group)
    assert _messages(repo, "m") == expected


def test_rate_limit_as_tritonserver_flags() -> None:
    from tritonforge.validator import RateLimit

    assert RateLimit().server_args() == []
    limits = RateLimit.from_options("execution_count", ["R:2", "G:3:1"])
    assert limits.server_args() == [
        "--rate-limit=execution_count", "--rate-limit-resource=R:2", "--rate-limit-resource=G:3:1"
    ]


@pytest.mark.parametrize("repo", ["", "  "])
def test_an_empty_repository_path_is_refused_not_taken_for_the_current_folder(
    repo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Path("") is ".": validate("") checked whatever folder the caller stood in (here a valid, empty one)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match=r"repo: '\s*' is not a path: give the model repository's folder") as info:
        validate(repo)
    assert [p.where for p in info.value.problems] == ["repo"]
    validate(".")  # the current folder, asked for by name, is still checked


def test_warmup_samples_are_checked_as_the_requests_triton_runs(repo: Path) -> None:
    """A sample's batch size, inputs, types and shapes were not compared with the model's: each passed the
    validator and failed the load (tests/integration/test_validator_vs_triton.py loads them)."""
    warmup_request_repo(repo)
    for name, (*_rest, message) in WARMUP_REQUEST_CASES.items():
        assert _messages(repo, name) == [message], name


def test_what_crashed_or_hung_triton_is_refused(repo: Path) -> None:
    """Each passed the validator; Triton 2.51 died (SIGSEGV, std::out_of_range) or never finished the load."""
    _write(repo, "agents", _python("agents", [], [], extra="model_repository_agents { }\n"), files=["model.py"])
    assert _messages(repo, "agents") == [
        "model_repository_agents lists no agent (Triton 2.51 crashes polling such a model): name an agent or remove "
        "the block"
    ]
    _write(repo, "unnamed", _python("unnamed", [], [], extra="model_repository_agents { agents { } }\n"),
           files=["model.py"])
    assert _messages(repo, "unnamed") == ["model_repository_agents: agent 0 has no name"]
    _write(repo, "negative", _python("negative", [], []), versions=["1", "-1"], files=["model.py"])
    assert _messages(repo, "negative") == [
        "version directory '-1' is a negative version: Triton 2.51 never finishes loading it; rename it to a version "
        "number >= 1"
    ]
    _write(repo, "huge", _python("huge", [], []), versions=["1", "99999999999999999999"], files=["model.py"])
    assert _messages(repo, "huge") == [
        "version directory '99999999999999999999' is past the largest version, 9223372036854775807: Triton 2.51 "
        "aborts reading it (std::out_of_range); rename it"
    ]


def test_the_python_backends_cpu_only_flag(repo: Path) -> None:
    extra = 'parameters { key: "FORCE_CPU_ONLY_INPUT_TENSORS" value { string_value: "maybe" } }\n'
    _write(repo, "m", _python("m", [], [], extra=extra), files=["model.py"])
    assert _messages(repo, "m") == ["Incorrect value for FORCE_CPU_ONLY_INPUT_TENSORS: maybe'"]
    (repo / "m" / "config.pbtxt").write_text(_python("m", [], [], extra=extra.replace("maybe", "No")))
    assert _messages(repo, "m") == []


def test_a_folder_that_cannot_be_read_is_named_not_raised(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(root reads everything: the permission error is raised where the validator reads the version folders)"""
    from tritonforge.validation import model_dir_rules

    model = _write(repo, "m", _python("m", [], []), files=["model.py"])
    real = model_dir_rules._subdirs

    def unreadable(folder: Path) -> list[str]:
        if folder == model:
            raise PermissionError(13, "Permission denied", str(folder))
        return real(folder)

    monkeypatch.setattr(model_dir_rules, "_subdirs", unreadable)
    problems = check_repository(repo)
    assert [(p.where, p.message) for p in problems] == [(str(model), f"failed to read {model}: Permission denied")]


def test_a_python_model_needs_its_own_file_whatever_cc_model_filenames_say(repo: Path) -> None:
    """The python backend loads model.py (or default_model_filename) only: with x.py named per GPU capability and no
    model.py, the validator passed and Triton's stub never finished loading."""
    extra = 'cc_model_filenames { key: "8.0" value: "x.py" }\n'
    model = _write(repo, "m", _python("m", [], [], extra=extra), files=["x.py"])
    assert _messages(repo, "m") == [
        f"model.py does not exist in the model repository path: {model / '1' / 'model.py'}"
    ]


def test_a_config_with_bytes_that_are_not_utf8_is_read_as_triton_reads_it(repo: Path) -> None:
    """Triton 2.51 loads it (a Latin-1 comment or string); the validator refused it with the codec's error."""
    config = _python("m", [], []).encode() + b'# caf\xe9\nparameters { key: "k" value { string_value: "caf\xe9" } }\n'
    model = _write(repo, "m", "", files=["model.py"])
    (model / "config.pbtxt").write_bytes(config)
    assert _messages(repo, "m") == []


def test_a_file_given_as_the_repository_is_named_as_a_file(tmp_path: Path) -> None:
    """`tritonforge validate examples/embed.yaml` said "failed to stat file ...", as if the file did not exist."""
    spec = tmp_path / "embed.yaml"
    spec.write_text("name: x\n")
    with pytest.raises(ValidationError, match=r"is a file, not a model repository folder: a deployment spec\? build "
                                              r"it first \(tritonforge build .*embed.yaml -o <folder>\)"):
        validate(spec)
    with pytest.raises(ValidationError, match=r"failed to stat file .*: model repository is not a directory"):
        validate(tmp_path / "missing")  # Triton's words for a path that is not there
