"""Rules of a model and its folder: backend autofill, versions to load, instance groups, model files, labels,
sequence state, warmup data, python environments (what Triton checks while it loads a model)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge.config_io import model_config_pb2
from tritonforge.validation.common import (
    _DEFAULT_FILE,
    _DTYPE_BYTES,
    _LEADING_INT,
    MIN_COMPUTE_CAPABILITY,
    RESERVED_DIRS,
    WILDCARD,
    _subdirs,
)
from tritonforge.validation.config_rules import _element_count

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


INT64_MAX = 2**63 - 1


def _out_of_range(sub: str, number: int) -> str | None:
    """tritonforge's own words: Triton 2.51 takes "-1" as version -1 (its stub then looks for version
    18446744073709551615 and the load never returns) and aborts the whole server on a number past int64
    (std::out_of_range from stoll)."""
    if number < 0:
        return (f"version directory '{sub}' is a negative version: Triton 2.51 never finishes loading it; rename it "
                "to a version number >= 1")
    if number > INT64_MAX:
        return (f"version directory '{sub}' is past the largest version, {INT64_MAX}: Triton 2.51 aborts reading it "
                "(std::out_of_range); rename it")
    return None


def _versions_to_load(config: ModelConfig, model_dir: Path) -> tuple[list[int], list[str], list[str]]:
    """Core's VersionsToLoad: the versions the policy selects, Triton's warnings for ignored folders, and the
    folders Triton 2.51 hangs or aborts on (problems)."""
    existing: set[int] = set()
    ignored: list[str] = []
    broken: list[str] = []
    for sub in _subdirs(model_dir):
        if sub in RESERVED_DIRS:
            continue
        if len(sub) > 1 and sub.startswith("0"):  # R4
            ignored.append(f"ignore version directory '{sub}' which contains leading zeros in its directory name")
            continue
        match = _LEADING_INT.match(sub)  # std::stoll semantics
        if match is None:
            ignored.append(f"ignore version directory '{sub}' which fails to convert to integral number")
            continue
        if problem := _out_of_range(sub, int(match.group())):
            broken.append(problem)
            continue
        existing.add(int(match.group()))
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        for version in policy.specific.versions:
            if version not in existing:
                ignored.append(
                    f"version {version} is specified for model '{config.name}', but the version directory is not "
                    "present"
                )
        return sorted({v for v in policy.specific.versions if v in existing}), ignored, broken
    if choice == "latest":
        return sorted(existing, reverse=True)[: policy.latest.num_versions][::-1], ignored, broken
    return sorted(existing), ignored, broken


# ================================================================ instance groups (R40-R43)


def _normalize_instance_groups(config: ModelConfig, gpus: int | None) -> None:
    """Core's NormalizeInstanceGroup (R40); with ``gpus=None`` the GPU ids are left as written."""
    pb = model_config_pb2()
    group_kind = pb.ModelInstanceGroup
    supported = set(range(gpus)) if gpus is not None else None
    if not config.instance_group:
        config.instance_group.add(name=config.name)
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == group_kind.KIND_AUTO:
            if supported is None:
                on_gpu = bool(group.gpus)
            else:
                on_gpu = bool(supported) and all(g in supported for g in group.gpus)
            group.kind = group_kind.KIND_GPU if on_gpu else group_kind.KIND_CPU
        if group.count < 1:
            cpu_default = group.kind == group_kind.KIND_CPU and config.backend in ("tensorflow", "onnxruntime")
            group.count = 2 if cpu_default else 1
        if group.kind == group_kind.KIND_GPU and not group.gpus and supported:
            group.gpus.extend(sorted(supported))


def _instance_group_rules(config: ModelConfig, gpus: int | None) -> list[str]:
    """Core's ValidateInstanceGroup after normalization (load time; not for ensembles)."""
    if config.HasField("ensemble_scheduling"):
        return []
    _normalize_instance_groups(config, gpus)
    kinds = model_config_pb2().ModelInstanceGroup
    found: list[str] = []
    for group in config.instance_group:
        head = f"instance group {group.name} of model {config.name}"
        if group.kind in (kinds.KIND_CPU, kinds.KIND_MODEL) and group.gpus:  # R41
            found.append(f"{head} has kind {kinds.Kind.Name(group.kind)} but specifies one or more GPUs")
        elif group.kind == kinds.KIND_GPU and gpus is not None:  # R42
            found += _gpu_id_rules(head, group, gpus)
        found += _profile_rules(head, group, config.platform)
    return found


def _gpu_id_rules(head: str, group: Any, gpus: int) -> list[str]:
    if not group.gpus:
        return [f"{head} has kind KIND_GPU but no GPUs are available"]
    available = ", ".join(str(g) for g in range(gpus))
    for gid in group.gpus:
        if not 0 <= gid < gpus:
            return [
                f"{head} specifies invalid or unsupported gpu id {gid}. GPUs with at least the minimum required "
                f"CUDA compute compatibility of {MIN_COMPUTE_CAPABILITY} are: {available}"
            ]
    return []


def _profile_rules(head: str, group: Any, platform: str) -> list[str]:
    if not group.profile:
        return []
    if platform != "tensorrt_plan":  # R43 (Triton prints no space before 'specifies')
        return [f"{head} and platform {platform}specifies profile field which is only supported for TensorRT models"]
    for profile in group.profile:
        if not profile:
            return ["profile name must not be empty"]
        match = _LEADING_INT.match(profile)
        if match is None:
            return [f"unable to parse '{profile}': stoi"]
        if int(match.group()) < 0:
            return [
                f"{head} and platform {platform} specifies invalid profile {profile}. The field should contain the "
                "string representation of a non-negative integer."
            ]
    return []


# ================================================================ files read at load time (R10/R11, R23, R37, R68)


def _missing_file(path: Path) -> str:
    return f"failed to open text file for read {path}: No such file or directory"


def _model_file_rules(config: ModelConfig, model_dir: Path, versions: Iterable[int]) -> dict[int, str]:
    """The artifact each loading version needs, for the backends whose layout is known (checked per version)."""
    backend = config.backend
    if backend == "pytorch":
        default = "model.pt2" if config.platform == "torch_aoti" else "model.pt"
    elif backend == "tensorflow":
        default = "model.savedmodel" if config.platform == "tensorflow_savedmodel" else "model.graphdef"
    else:
        default = _DEFAULT_FILE.get(backend)  # type: ignore[assignment]
    if default is None or config.runtime:  # custom or python-based backends: layout unknown offline
        return {}
    names = {config.default_model_filename or default}
    if backend != "python":  # the python backend reads one file; cc_model_filenames (per GPU capability) are ignored
        names.update(config.cc_model_filenames.values())
    instance = _first_instance(config)
    found: dict[int, str] = {}
    for version in versions:
        folder = model_dir / str(version)
        if any(_artifact_exists(folder / name, backend) for name in names):
            continue
        path = folder / (config.default_model_filename or default)
        if backend == "python":
            found[version] = f"model.py does not exist in the model repository path: {path}"
        else:
            found[version] = f"unable to find '{path}' for model instance '{instance}'"
    return found


def _first_instance(config: ModelConfig) -> str:
    """The name Triton gives a model's first instance in its messages: its group's (normalized: an unnamed one is
    named after the model) and index 0."""
    group = config.instance_group[0].name if config.instance_group and config.instance_group[0].name else config.name
    return f"{group}_0"


def _artifact_exists(path: Path, backend: str) -> bool:
    if backend == "onnxruntime" and path.is_dir():  # a directory holds <dir>/model.onnx
        return (path / "model.onnx").is_file()
    return path.exists()


def _label_file_rules(config: ModelConfig, model_dir: Path) -> list[str]:
    found: list[str] = []
    root = model_dir.resolve()
    for output in config.output:
        if not output.label_filename:
            continue
        path = model_dir / output.label_filename
        if not path.resolve().is_relative_to(root):  # R23
            found.append(
                f"label file path '{output.label_filename}' for output '{output.name}' in model '{config.name}' is "
                "outside model directory"
            )
        elif not path.is_file():
            found.append(_missing_file(path))
    return found


def _sequence_state_rules(config: ModelConfig, model_dir: Path) -> list[str]:
    """Implicit-state checks of the sequence batcher's creation (R37), first error per state."""
    if not config.HasField("sequence_batching"):
        return []
    found: list[str] = []
    seen: set[str] = set()
    gpu = model_config_pb2().ModelInstanceGroup.KIND_GPU
    all_gpu = all(group.kind == gpu for group in config.instance_group)  # KIND_AUTO is resolved by now (R40)
    for state in config.sequence_batching.state:
        message = _state_rules(state, seen, config.max_batch_size, model_dir, all_gpu)
        if message:
            found.append(message)
    return found


def _state_rules(state: Any, seen: set[str], max_batch_size: int, model_dir: Path, all_gpu: bool) -> str | None:
    name = state.input_name
    if state.use_growable_memory and not state.use_same_buffer_for_input_output:
        return (
            f"In order to 'use_growable_memory', you must also enable 'use_single_buffer' for state input name "
            f"'{name}'."
        )
    if state.use_growable_memory and not all_gpu:
        return (
            "'use_growable_memory' can only work with KIND_GPU model instances right now. Please either change the "
            f"instance type to KIND_GPU or set 'use_growable_memory' to false for state input '{name}'."
        )
    if len(state.initial_state) > 1:
        return (
            f"initial_state field for state input '{name}' must contain exactly one or zero element. "
            f"Found '{len(state.initial_state)}' elements."
        )
    if not state.initial_state:
        return None
    initial = state.initial_state[0]
    if initial.data_type != state.data_type:
        return f"The data type used for 'initial_state' field of state '{name}' does not match the state data type."
    if not initial.name:
        return f"Field 'name' must be set when using initial_state for state input '{name}'."
    if name in seen:
        return f"State input name '{name}' specified more than once."
    seen.add(name)
    if len(initial.dims) != len(state.dims):
        return (
            "Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state input "
            f"'{name}'. {len(initial.dims)} != {len(state.dims)}"
        )
    for initial_dim, state_dim in zip(initial.dims, state.dims, strict=True):
        if initial_dim == WILDCARD:
            return f"'initial_state' field for state input name '{name}' contains variable dimensions."
        if state_dim != WILDCARD and initial_dim != state_dim:
            return (
                f"'initial_state' dim for input name '{name}' doesn't match 'state' dim description. "
                f"{initial_dim} != {state_dim}"
            )
    data = initial.WhichOneof("state_data")
    if data is None:
        return f"initial_state setting expects state'{name}' to have state_data set"
    if data == "data_file":
        path = model_dir / "initial_state" / initial.data_file
        expected = _byte_size(initial.data_type, initial.dims)
        return _data_file_rule(path, initial.data_file, initial.data_type, expected, "initial_state", ".")
    return None


def _byte_size(data_type: int, dims: Iterable[int]) -> int:
    count = _element_count(dims)
    size = count * _DTYPE_BYTES.get(data_type, 0)
    return size if size else count * 4  # TYPE_STRING is counted as int32 lengths


def _data_file_rule(path: Path, name: str, data_type: int, expected: int, what: str, end: str) -> str | None:
    if not path.is_file():
        return _missing_file(path)
    actual = path.stat().st_size
    if data_type != model_config_pb2().TYPE_STRING and expected > actual:
        # Triton prints no space before 'only'
        return f"{what} setting expects {expected} bytes, but the data provided from {name}only has {actual} bytes{end}"
    return None


def _warmup_rules(config: ModelConfig, model_dir: Path) -> list[str]:
    """Warmup samples are generated when an instance loads (R68); samples with batch_size 0 are skipped."""
    if config.HasField("ensemble_scheduling"):
        return []
    found: list[str] = []
    for sample in config.model_warmup:
        if sample.batch_size == 0:
            continue
        before = len(found)
        for input_name, data in sorted(sample.inputs.items()):
            if _element_count(data.dims) == WILDCARD:
                found.append(
                    f"warmup setting expects all variable-size dimensions are specified for input '{input_name}'"
                )
                continue
            kind = data.WhichOneof("input_data_type")
            if kind is None:
                found.append(f"warmup setting expects input '{input_name}' to have input_data_type set")
            elif kind == "input_data_file":
                path = model_dir / "warmup" / data.input_data_file
                expected = _byte_size(data.data_type, data.dims)
                message = _data_file_rule(path, data.input_data_file, data.data_type, expected, "warmup", "")
                if message:
                    found.append(message)
        if len(found) == before and (request := _warmup_request_problem(config, sample)):
            found.append(request)
    return found


def _warmup_request_problem(config: ModelConfig, sample: Any) -> str | None:
    """A warmup sample is run as an inference request when an instance loads, and Triton checks it as one: its
    batch size, then that every required input is given, then each input's type and shape against the config
    (Triton 2.51's texts; seen refusing loads the validator had passed)."""
    mbs, name = config.max_batch_size, config.name
    if sample.batch_size > max(mbs, 1) or (mbs == 0 and sample.batch_size > 1):
        return (f"failed to run warmup sample '{sample.name}': batch size {sample.batch_size} for "
                f"'{_first_instance(config)}', max allowed is {mbs}")
    inputs = {t.name: t for t in config.input}
    required = [n for n, t in inputs.items() if not t.optional]
    given = list(sample.inputs)
    missing = [n for n in required if n not in sample.inputs]
    if missing:
        shown = ", ".join(f"'{n}'" for n in sorted(given))
        return (f"[request id: <id_unknown>] expected {len(required)} inputs but got {len(given)} inputs for model "
                f"'{name}'. Got input(s) [{shown}], but missing required input(s) "
                f"[{', '.join(repr(n) for n in missing)}]. Please provide all required input(s).")
    types = model_config_pb2().DataType
    for input_name, data in sorted(sample.inputs.items()):
        model_input = inputs.get(input_name)
        if model_input is None:
            continue  # (Triton's text for an unknown input was not observed: left to the load)
        if data.data_type != model_input.data_type:
            got = types.Name(data.data_type).removeprefix("TYPE_") if data.data_type else "<invalid>"
            return (f"[request id: <id_unknown>] inference input '{input_name}' data-type is '{got}', but model "
                    f"'{name}' expects '{types.Name(model_input.data_type).removeprefix('TYPE_')}'")
        want, got_dims = list(model_input.dims), list(data.dims)
        if len(want) != len(got_dims) or any(w not in (WILDCARD, g) for w, g in zip(want, got_dims, strict=False)):
            if mbs == 0:
                return (f"[request id: <id_unknown>] unexpected shape for input '{input_name}' for model '{name}'. "
                        f"Expected {_dims_text(want)}, got {_dims_text(got_dims)}.")
            return (f"[request id: <id_unknown>] unexpected shape for input '{input_name}' for model '{name}'. "
                    f"Expected {_dims_text([WILDCARD, *want])}, got {_dims_text([sample.batch_size, *got_dims])}. "
                    f"{BATCH_DIM_NOTE}")
    return None


BATCH_DIM_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each "
    "input shape. If you want to specify the full shape including the batch dim in your input dims config, try "
    "setting max_batch_size to zero. See the model configuration docs for more info on max_batch_size."
)


def _dims_text(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _python_env_rules(config: ModelConfig, model_dir: Path) -> list[str]:
    """The python backend's own parameters: FORCE_CPU_ONLY_INPUT_TENSORS (yes/true/no/false, any case), and
    EXECUTION_ENV_PATH when it points into the model directory (§4)."""
    if config.backend != "python":
        return []
    if "FORCE_CPU_ONLY_INPUT_TENSORS" in config.parameters:
        value = config.parameters["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value
        if value.lower() not in ("yes", "true", "no", "false"):
            return [f"Incorrect value for FORCE_CPU_ONLY_INPUT_TENSORS: {value}'"]  # the backend's text, quote and all
    if "EXECUTION_ENV_PATH" not in config.parameters:
        return []
    value = config.parameters["EXECUTION_ENV_PATH"].string_value
    marker = "$$TRITON_MODEL_DIRECTORY"
    if not value.startswith(marker):
        return []  # a path on the server's file system: not checkable here
    path = Path(str(model_dir) + value[len(marker) :])
    if not path.exists():
        return [f"Failed to get the canonical path for {path}."]
    if path.is_dir() and not (path / "bin" / "activate").is_file():
        return [
            f"Path {path / 'bin' / 'activate'} does not exist. The Python environment should contain an "
            "'activate' script."
        ]
    return []


def _batch_strategy_rules(config: ModelConfig, model_dir: Path, repo: Path | None) -> list[str]:
    """R31: no custom batching library with the sequence batcher, and one must stay inside the model repository."""
    if "TRITON_BATCH_STRATEGY_PATH" not in config.parameters:
        return []
    if config.HasField("sequence_batching"):  # core refuses the model, its "using default" wording aside
        return ["TRITON_BATCH_STRATEGY_PATH cannot be specified with sequence batcher, using default batching strategy"]
    if repo is None:
        return []
    path = Path(config.parameters["TRITON_BATCH_STRATEGY_PATH"].string_value)
    if not path.is_absolute():
        path = model_dir / path
    if not path.resolve().is_relative_to(repo.resolve()):
        return ["Batching library path escapes model repository."]
    return []


# ================================================================ dependency graph and ensembles across models


def _autofill_backend_fields(config: ModelConfig, model_name: str, model_dir: Path | None) -> str | None:
    """Core's AutoCompleteBackendFields: name, platform, backend, default_model_filename (R10)."""
    subdirs = _subdirs(model_dir) if model_dir is not None else []
    first = model_dir / subdirs[0] if model_dir is not None and subdirs else None
    content = {p.name: p.is_dir() for p in first.iterdir()} if first is not None else {}
    has_version = first is not None

    def present(filename: str, want_dir: bool | None = None) -> bool:
        return filename in content and (want_dir is None or content[filename] == want_dir)

    def guessing() -> bool:
        return not config.platform and not config.default_model_filename and has_version

    if not config.name:
        config.name = model_name
    # TensorFlow: the platform is required, or inferred from the file name
    if not config.platform and config.backend in ("", "tensorflow"):
        if config.default_model_filename == "model.savedmodel":
            config.platform = "tensorflow_savedmodel"
        elif config.default_model_filename == "model.graphdef":
            config.platform = "tensorflow_graphdef"
        elif not config.default_model_filename and has_version:
            if present("model.savedmodel", want_dir=True):
                config.platform = "tensorflow_savedmodel"
            if present("model.graphdef", want_dir=False):
                config.platform = "tensorflow_graphdef"
    if config.platform in ("tensorflow_savedmodel", "tensorflow_graphdef"):
        config.backend = config.backend or "tensorflow"
        config.default_model_filename = config.default_model_filename or (
            "model.savedmodel" if config.platform == "tensorflow_savedmodel" else "model.graphdef"
        )
        return None
    # TensorRT
    if not config.backend and (
        config.platform == "tensorrt_plan"
        or config.default_model_filename == "model.plan"
        or (guessing() and present("model.plan", want_dir=False))
    ):
        config.backend = "tensorrt"
    if config.backend == "tensorrt":
        config.platform = config.platform or "tensorrt_plan"
        config.default_model_filename = config.default_model_filename or "model.plan"
        return None
    # ONNX Runtime (model.onnx may be a file or a directory)
    if not config.backend and (
        config.platform == "onnxruntime_onnx"
        or config.default_model_filename == "model.onnx"
        or (guessing() and present("model.onnx"))
    ):
        config.backend = "onnxruntime"
    if config.backend == "onnxruntime":
        config.platform = config.platform or "onnxruntime_onnx"
        config.default_model_filename = config.default_model_filename or "model.onnx"
        return None
    # OpenVINO
    if not config.backend and (config.default_model_filename == "model.xml" or (guessing() and present("model.xml"))):
        config.backend = "openvino"
    if config.backend == "openvino":
        config.default_model_filename = config.default_model_filename or "model.xml"
        return None
    # PyTorch (libtorch and AOTInductor)
    if not config.backend:
        if config.platform in ("pytorch_libtorch", "libtorch", "torch_aoti") or config.default_model_filename in (
            "model.pt",
            "model.pt2",
        ):
            config.backend = "pytorch"
        elif guessing() and present("model.pt", want_dir=False):
            config.backend, config.platform = "pytorch", "pytorch_libtorch"
        elif guessing() and present("model.pt2", want_dir=False):
            config.backend, config.platform = "pytorch", "torch_aoti"
    if config.backend == "pytorch":
        if not config.platform:
            config.platform = "pytorch_libtorch"
            config.default_model_filename = config.default_model_filename or "model.pt"
        elif config.platform == "torch_aoti" and not config.default_model_filename:
            config.default_model_filename = "model.pt2"
        return None
    # Python
    if not config.backend and (config.default_model_filename == "model.py" or (guessing() and present("model.py"))):
        config.backend = "python"
    if config.backend == "python":
        config.default_model_filename = config.default_model_filename or "model.py"
        return None
    # custom backend named after the model: 'model.<backend>'
    if not config.backend and not config.platform and not config.default_model_filename:
        if "." not in model_name:
            return (
                f"Invalid model name: Could not determine backend for model '{model_name}' with no backend in "
                "model configuration. Expected model name of the form 'model.<backend_name>'."
            )
        config.backend = model_name.split(".", 1)[1]
        config.default_model_filename = f"model.{config.backend}"
    return None
