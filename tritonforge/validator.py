"""Offline validation of a Triton model repository: Triton's load-time rules, without a server.

The checks follow the order in which Triton itself validates a repository (triton-inference-server/core:
``model_config_utils.cc``, ``model_repository_manager.cc``, ``model_lifecycle.cc``, ``ensemble_utils.cc``); the
rule labels R1..R68 in the comments are those of the team's Triton config-rules reference:

1. poll: read ``config.pbtxt``, autofill backend fields, ``ValidateModelConfig``, ``ValidateModelIOConfig``
   (we always validate as ``--disable-auto-complete-config``: no backend ever fills a config in), directory name;
2. dependency graph: ensemble steps resolved, missing composing models, circular dependencies;
3. load: version policy, instance groups, label files, sequence state, model files, warmup;
4. ensembles, once their composing models "loaded": required versions, then the cross-model
   ``ValidateEnsembleConfig`` (dtype, shape, decoupled joins), which derives the ensemble's decoupled flag.

Messages use Triton's own wording so they can be recognised in a server log. Unlike Triton, which stops at the
first error of a model, every independent problem is reported. A model that fails to poll never enters the
dependency graph (ensembles that use it see it as "not available"), exactly as in Triton.

Python-backend models are never executed: ``auto_complete_config`` is not run, the config is taken as written.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge.config_io import model_config_pb2, read_config
from tritonforge.errors import Problem, ValidationError

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["check_config", "check_repository", "validate"]

CONFIG_FILE = "config.pbtxt"
WILDCARD = -1
ENSEMBLE = "ensemble"
# std::to_string(min_compute_capability) of Triton's default build (TRITON_MIN_COMPUTE_CAPABILITY 6.0)
MIN_COMPUTE_CAPABILITY = "6.000000"
# sub-directories of a model that are never versions (R4)
RESERVED_DIRS = frozenset({"warmup", "initial_state", "configs"})

# R9: only these backends are checked against the platform (an unknown backend accepts any platform)
_BACKEND_TYPE = {"tensorflow": "tf", "tensorrt": "trt", "onnxruntime": "ort", "pytorch": "torch"}
_PLATFORM_TYPE = {
    "tensorflow_graphdef": "tf",
    "tensorflow_savedmodel": "tf",
    "tensorrt_plan": "trt",
    "onnxruntime_onnx": "ort",
    "pytorch_libtorch": "torch",
    "torch_aoti": "torch",
}
# default artifact of each backend whose files can be checked offline (R10/R11)
_DEFAULT_FILE = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "openvino": "model.xml",
    "python": "model.py",
}
_DTYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 2, 8: 4, 9: 8, 10: 2, 11: 4, 12: 8, 13: 0, 14: 2}
_CORRID_TYPES = frozenset({"TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING"})
_LEADING_INT = re.compile(r"\s*[+-]?\d+")


# ================================================================ public API


def check_config(config: ModelConfig, *, model_dir: Path | None = None, gpus: int | None = 8) -> list[str]:
    """Every single-config problem of one model, as Triton's messages (the config itself is not modified).

    With ``model_dir`` the layout rules run too (directory name, version folders, model files, label, warmup and
    initial-state files); without it only what the config alone says is checked. ``gpus`` is the number of GPUs
    of the target machine (ids ``0..gpus-1``); ``None`` skips the GPU-id checks.
    """
    copy = model_config_pb2().ModelConfig()
    copy.CopyFrom(config)
    model_dir = Path(model_dir) if model_dir is not None else None
    repo = model_dir.parent if model_dir is not None else None
    return _check_model(copy, model_dir, repo, gpus).messages()


def check_repository(repo: str | Path, *, gpus: int | None = 8, image: str | None = None) -> list[Problem]:
    """Every problem of the repository, sorted (stably) by the path of the offending config.pbtxt.

    ``image`` is the Triton container that will serve it (e.g. ``nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3``;
    default: the ``image`` recorded by tritonforge's build in ``tritonforge.json``): every TensorRT-LLM engine
    manifest in the repository is checked against that container's TensorRT-LLM version.
    """
    repo = Path(repo)
    if not repo.is_dir():
        return [Problem(str(repo), f"failed to stat file {repo}: model repository is not a directory")]
    problems: list[Problem] = []
    models: dict[str, _Model] = {}
    for model_dir in sorted((p for p in repo.iterdir() if p.is_dir()), key=lambda p: p.name):
        model = _load_model(model_dir, repo, gpus, problems)
        if model is not None:
            models[model.name] = model
    _check_dependencies(models)
    _check_rate_limiter(models)
    for model in models.values():
        problems.extend(Problem(model.where, m) for m in _dedupe([*model.findings.messages(), *model.cross]))
    problems.extend(_engine_manifest_problems(repo, image))
    return sorted(problems, key=lambda p: p.where)


def _engine_manifest_problems(repo: Path, image: str | None) -> list[Problem]:
    """A TensorRT-LLM engine only loads in a container whose TensorRT-LLM version built it (the most common
    load failure users report): compare each engine manifest with the target image."""
    import json

    if image is None:
        try:
            image = json.loads((repo / "tritonforge.json").read_text()).get("image")
        except (OSError, ValueError, AttributeError):
            image = None
    if not image:
        return []
    from tritonforge.builders.trtllm_engine import MANIFEST_NAME, check_engine_manifest

    problems = []
    for manifest_path in sorted(repo.glob(f"*/*/engine/{MANIFEST_NAME}")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            problems.append(Problem(str(manifest_path), f"unreadable engine manifest: {err}"))
            continue
        problems.extend(Problem(str(manifest_path), m) for m in check_engine_manifest(manifest, image))
    return problems


def validate(repo: str | Path, *, gpus: int | None = 8, image: str | None = None) -> None:
    """Raise ValidationError listing every problem if the repository would not load cleanly in Triton."""
    problems = check_repository(repo, gpus=gpus, image=image)
    if problems:
        raise ValidationError(problems)


# ================================================================ per-model bookkeeping


@dataclass
class _Findings:
    """What one model's own checks found, split by the stage at which Triton would fail."""

    poll: list[str] = field(default_factory=list)  # the model never enters the dependency graph
    load: list[str] = field(default_factory=list)  # every version fails to load
    version_errors: dict[int, str] = field(default_factory=dict)  # only these versions fail to load
    versions: list[int] = field(default_factory=list)  # selected by the version policy (R39)

    def messages(self) -> list[str]:
        return _dedupe([*self.poll, *self.load, *self.version_errors.values()])

    def loaded_versions(self) -> set[int]:
        if self.poll or self.load:
            return set()
        return {v for v in self.versions if v not in self.version_errors}

    def load_error(self) -> str:
        return next(iter([*self.load, *self.version_errors.values()]), "")


@dataclass
class _Model:
    name: str
    where: str
    config: ModelConfig
    findings: _Findings
    cross: list[str] = field(default_factory=list)  # dependency, ensemble cross-model and repository-wide checks

    @property
    def is_ensemble(self) -> bool:
        return self.config.HasField("ensemble_scheduling")


def _load_model(model_dir: Path, repo: Path, gpus: int | None, problems: list[Problem]) -> _Model | None:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        problems.append(
            Problem(
                str(model_dir),
                f"failed to open text file for read {path}: No such file or directory "
                "(tritonforge validates as tritonserver --disable-auto-complete-config and never relies on "
                "auto-complete: every model needs its config.pbtxt)",
            )
        )
        return None
    try:
        config = read_config(path)
    except ValidationError as err:
        problems.extend(err.problems)
        return None
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"failed to read text proto from {path}: {err}"))
        return None
    findings = _check_model(config, model_dir, repo, gpus)
    return _Model(model_dir.name, str(path), config, findings)


def _check_model(config: ModelConfig, model_dir: Path | None, repo: Path | None, gpus: int | None) -> _Findings:
    """Steps 1-5 and 8 of Triton's load sequence for one model; normalizes ``config`` in place."""
    found = _Findings()
    dir_name = model_dir.name if model_dir is not None else ""
    error = _autofill_backend_fields(config, dir_name, model_dir)
    if error:
        found.poll.append(error)
        return found
    _normalize(config)
    found.poll += _model_config_rules(config)
    found.poll += _model_io_rules(config)
    if model_dir is not None and config.name and config.name != dir_name:  # R1
        found.poll.append(
            f"unexpected directory name '{dir_name}' for model '{config.name}', directory name must equal model name"
        )
    if model_dir is None:
        found.load += _instance_group_rules(config, gpus)
        return found
    found.versions, ignored = _versions_to_load(config, model_dir)
    if not found.versions:  # R5 (ensembles included)
        hint = "".join(f"; {note}" for note in ignored)
        found.load.append(
            f"at least one version must be available under the version policy of model '{config.name}'{hint}"
        )
    found.load += _instance_group_rules(config, gpus)
    found.load += _label_file_rules(config, model_dir)
    found.load += _sequence_state_rules(config, model_dir)
    found.load += _python_env_rules(config, model_dir)
    found.load += _batch_strategy_rules(config, model_dir, repo)
    found.load += _warmup_rules(config, model_dir)
    found.version_errors = _model_file_rules(config, model_dir, found.versions)
    return found


# ================================================================ normalization (§2 step 2, §3.11, R10)


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


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


def _normalize(config: ModelConfig) -> None:
    """Core's NormalizeModelConfig, limited to the defaults that later rules depend on (§3.11)."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    batching = config.dynamic_batching
    if config.HasField("dynamic_batching") and not batching.preferred_batch_size and config.max_batch_size > 0:
        batching.preferred_batch_size.append(config.max_batch_size)
    if config.HasField("sequence_batching"):
        batcher = config.sequence_batching
        if batcher.max_sequence_idle_microseconds == 0:
            batcher.max_sequence_idle_microseconds = 1_000_000
        if batcher.HasField("oldest") and not batcher.oldest.preferred_batch_size and config.max_batch_size > 0:
            batcher.oldest.preferred_batch_size.append(config.max_batch_size)


# ================================================================ ValidateModelConfig (poll)


def _model_config_rules(config: ModelConfig) -> list[str]:
    found: list[str] = []
    if not config.name:  # R2
        found.append("model configuration must specify 'name'")
    found += _platform_rules(config)
    if config.max_batch_size < 0:  # R12
        found.append(f"'max_batch_size' must be non-negative value for {config.name}")
    found += _dynamic_batching_rules(config)
    found += _sequence_batching_rules(config)
    found += _ensemble_scheduling_rules(config)
    if config.model_transaction_policy.decoupled and config.response_cache.enable:  # R66
        found.append(_decoupled_cache_message(config.name))
    found += _model_metrics_rules(config)
    return found


def _platform_rules(config: ModelConfig) -> list[str]:
    name, platform, backend = config.name, config.platform, config.backend
    if not backend and platform != ENSEMBLE:  # R7
        return [f"unexpected platform type '{platform}' for {name}"]
    if backend and platform == ENSEMBLE:  # R8
        return [f"Ensemble model '{name}' must have platform type '{platform}' and empty backend type"]
    kind = _BACKEND_TYPE.get(backend)
    if kind is not None and kind != _PLATFORM_TYPE.get(platform):  # R9
        return [f"unexpected 'platform' and 'backend' pair, got:{platform}, {backend}"]
    return []


def _dynamic_batching_rules(config: ModelConfig) -> list[str]:
    if not config.HasField("dynamic_batching"):
        return []
    name, batching = config.name, config.dynamic_batching
    found: list[str] = []
    for size in batching.preferred_batch_size:  # R28
        if size <= 0:
            found.append(f"dynamic batching preferred size must be positive for {name}")
        elif size > config.max_batch_size:
            found.append(f"dynamic batching preferred size must be <= max batch size for {name}")
    levels = batching.priority_levels
    if levels != 0:  # R29
        if not 1 <= batching.default_priority_level <= levels:
            found.append(f"default priority level must be in range [1, {levels}] for {name}")
        if any(not 1 <= level <= levels for level in batching.priority_queue_policy):
            found.append(f"priority queue policy must have priority level in range [1, {levels}] for {name}")
    if batching.preserve_ordering:  # R30
        if levels > 1:
            found.append(f"Only one priority level is allowed when 'preserve_ordering' is true for {name}")
        delay = model_config_pb2().ModelQueuePolicy.DELAY
        policies = [batching.default_queue_policy, *batching.priority_queue_policy.values()]
        if any(p.default_timeout_microseconds != 0 and p.timeout_action == delay for p in policies):
            found.append(
                f"Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for {name}"
            )
    return found


def _sequence_batching_rules(config: ModelConfig) -> list[str]:
    if not config.HasField("sequence_batching"):
        return []
    pb = model_config_pb2()
    name, batcher = config.name, config.sequence_batching
    kinds = pb.ModelSequenceBatching.Control
    found: list[str] = []
    if config.response_cache.enable:  # R32
        found.append(
            f"Response Cache does not currently support model {name} with sequence batching scheduler. "
            "Please disable the response cache."
        )
    for kind in (kinds.CONTROL_SEQUENCE_START, kinds.CONTROL_SEQUENCE_END, kinds.CONTROL_SEQUENCE_READY):
        found += _control_rules(batcher, name, kind, typed=False)  # R33, R34
    found += _control_rules(batcher, name, kinds.CONTROL_SEQUENCE_CORRID, typed=True)  # R35
    if batcher.HasField("oldest"):  # R36
        for size in batcher.oldest.preferred_batch_size:
            if size <= 0:
                found.append(f"sequence batching preferred batch size must be positive for {name}")
            elif size > config.max_batch_size:
                found.append(f"sequence batching preferred batch size must be <= max batch size for {name}")
    if batcher.HasField("direct") and not 0.0 <= batcher.direct.minimum_slot_utilization <= 1.0:
        found.append(f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}")
    return found


def _control_rules(batcher: Any, name: str, kind: int, *, typed: bool) -> list[str]:
    """Core's Get{Boolean,Typed}SequenceControlProperties for one control kind (first error, as Triton)."""
    pb = model_config_pb2()
    kind_name = pb.ModelSequenceBatching.Control.Kind.Name(kind)
    seen_tensors: set[str] = set()
    seen_control = False
    for control_input in batcher.control_input:
        if not control_input.name:
            return [f"sequence batching control tensor must have a name for {name}"]
        if control_input.name in seen_tensors:
            return [
                f"sequence batching control tensor '{control_input.name}' is specified for multiple control kinds "
                f"for {name}"
            ]
        seen_tensors.add(control_input.name)
        for control in control_input.control:
            if control.kind != kind:
                continue
            if seen_control:
                return [f"sequence batching specifies multiple {kind_name} tensors for {name}"]
            seen_control = True
            lists = [
                ("int32_false_true", len(control.int32_false_true)),
                ("fp32_false_true", len(control.fp32_false_true)),
                ("bool_false_true", len(control.bool_false_true)),
            ]
            used = [(label, size) for label, size in lists if size]
            if typed:
                if used:
                    return [
                        "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or "
                        f"'bool_false_true' for {kind_name} for {name}"
                    ]
                dtype = pb.DataType.Name(control.data_type)
                if dtype not in _CORRID_TYPES:
                    return [
                        f"unexpected data type for control {kind_name} for {name}. Allowed data types are "
                        "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
                    ]
            elif not used:
                return [
                    "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or "
                    f"'bool_false_true' for {kind_name} for {name}"
                ]
            elif len(used) > 1:
                return [
                    "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and "
                    f"'bool_false_true' for {kind_name} for {name}"
                ]
            elif used[0][1] != 2:
                return [
                    f"sequence batching control '{used[0][0]}' must have exactly 2 entries for {kind_name} for {name}"
                ]
    return []


def _model_metrics_rules(config: ModelConfig) -> list[str]:
    if not config.HasField("model_metrics"):
        return []
    for control in config.model_metrics.metric_control:  # R67
        if not control.HasField("metric_identifier"):
            return ["metric control must specify 'metric_identifier'"]
        if not control.metric_identifier.family:
            return ["metric identifier must specify non-empty 'family'"]
        if not control.HasField("histogram_options"):
            return ["metric control must specify 'histogram_options'"]
        if not control.histogram_options.buckets:
            return ["histogram options must specify non-empty 'buckets'"]
    return []


def _decoupled_cache_message(name: str) -> str:
    return (
        f"Response Cache does not currently support model {name} with 'decoupled' transaction policy. "
        "Please disable the response cache."
    )


# ================================================================ ensembles, single config (R46-R51)


def _ensemble_scheduling_rules(config: ModelConfig) -> list[str]:
    name = config.name
    if not config.HasField("ensemble_scheduling"):
        if config.platform == ENSEMBLE:  # R46
            return [f"ensemble scheduling must be set for ensemble {name} whose platform is {ENSEMBLE}"]
        return []
    if config.platform != ENSEMBLE:  # R46
        return [f"ensemble scheduling cannot be set for model '{name}' whose platform is not {ENSEMBLE}"]
    found: list[str] = []
    if config.instance_group:  # R47
        found.append(f"instance group should not be specified for ensemble '{name}'")
    if config.HasField("optimization"):
        found.append(f"optimization should not be specified for ensemble '{name}'")
    if config.model_warmup:
        found.append(f"model_warmup can not be specified for ensemble '{name}'")
    if not config.ensemble_scheduling.step:  # R48
        return [*found, f"must specify 'step' for ensemble '{name}'"]
    tensors, graph_errors = _build_ensemble_graph(config)
    if graph_errors:
        return found + graph_errors
    return found + _ensemble_data_flow_rules(config, tensors)


@dataclass(eq=False)
class _FlowTensor:
    """One ensemble tensor of the single-config data-flow graph (core's EnsembleTensor)."""

    name: str
    is_output: bool
    ready: bool = False
    prev: list[_FlowTensor] = field(default_factory=list)
    next: list[_FlowTensor] = field(default_factory=list)


def _build_ensemble_graph(config: ModelConfig) -> tuple[dict[str, _FlowTensor], list[str]]:
    name = config.name
    tensors: dict[str, _FlowTensor] = {}
    found: list[str] = []
    for index, step in enumerate(config.ensemble_scheduling.step):
        missing = next((f for f in ("model_name", "input_map", "output_map") if not getattr(step, f)), None)
        if missing:  # R48
            found.append(f"must specify '{missing}' in step {index} of ensemble '{name}'")
            continue
        produced: list[_FlowTensor] = []
        for _key, tensor in sorted(step.output_map.items()):
            node = tensors.get(tensor)
            if node is None:
                node = tensors[tensor] = _FlowTensor(tensor, is_output=True)
            elif node.is_output:  # R49
                found.append(
                    f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble '{name}' "
                    f"step {index}"
                )
            else:
                node.is_output = True
            produced.append(node)
        for _key, tensor in sorted(step.input_map.items()):
            node = tensors.setdefault(tensor, _FlowTensor(tensor, is_output=False))
            for output in produced:
                output.prev.append(node)
                node.next.append(output)
    return tensors, found


def _ensemble_data_flow_rules(config: ModelConfig, tensors: dict[str, _FlowTensor]) -> list[str]:
    """R50/R51: a data-flow closure from the ensemble inputs (a cycle inside one ensemble never becomes ready)."""
    name = config.name
    found: list[str] = []
    queue: deque[_FlowTensor] = deque()
    for tensor in config.input:
        node = tensors.get(tensor.name)
        if node is None:
            found.append(f"ensemble input '{tensor.name}' for ensemble {name}' is not used")
            continue
        node.ready = True
        queue.append(node)
    while queue:
        for nxt in queue.popleft().next:
            if not nxt.ready and all(p.ready for p in nxt.prev):
                nxt.ready = True
                queue.append(nxt)
    outputs = {tensor.name for tensor in config.output}
    for tensor in config.output:
        node = tensors.get(tensor.name)
        if node is None:
            found.append(f"ensemble output '{tensor.name}' for ensemble {name}' is not used")
        elif not node.ready:
            found.append(_not_written_message(name, node))
    flow_broken = bool(found)
    for tensor_name, node in sorted(tensors.items()):
        if tensor_name in outputs:
            continue
        if (node.ready and not node.next) or (not node.ready and not flow_broken):
            found.append(f"ensemble tensor '{tensor_name}' is unused in ensemble '{name}'")
    return found


def _not_written_message(name: str, output: _FlowTensor) -> str:
    message = f"output '{output.name}' for ensemble '{name}' is not written"
    last, prev, seen = output, output.prev, set()
    while prev:
        source = next((n for n in prev if not n.ready and n.name not in seen), None)
        if source is None:
            break
        seen.add(source.name)
        last, prev = source, source.prev
    if last is not output:
        message += f": at least one of its depending tensors, '{last.name}', is not connected"
    return message


# ================================================================ ValidateModelIOConfig (R13-R27)


def _model_io_rules(config: ModelConfig) -> list[str]:
    """Input/output/batch-IO rules; Triton appends ' for <model>' to each of these messages."""
    platform, batch = config.platform, config.max_batch_size
    found = [_io_rules(t, batch, platform, "input") for t in config.input]
    found += [_io_rules(t, batch, platform, "output") for t in config.output]
    messages = [message for message in found if message] + _batch_io_rules(config)
    return [f"{message} for {config.name}" for message in messages]


def _io_rules(tensor: Any, max_batch_size: int, platform: str, kind: str) -> str | None:
    shape_error = _io_shape_rules(tensor, max_batch_size, f"model {kind} ")
    if shape_error:
        return shape_error
    formats = model_config_pb2().ModelInput
    if kind == "input" and tensor.format in (formats.FORMAT_NHWC, formats.FORMAT_NCHW) and len(tensor.dims) != 3:
        return "model input NHWC/NCHW require 3 dims"  # R20
    if platform != "tensorrt_plan" and tensor.is_shape_tensor:  # R21
        return "shape tensors are only supported for TensorRT platform"
    if tensor.is_non_linear_format_io:  # R22
        if platform != "tensorrt_plan":
            return "Non-linear IO format is only supported for the TensorRT platform"
        if len(tensor.dims) != 3:
            return f"Non-linear IO format {kind} requires 3 dims"
    return None


def _element_count(dims: Iterable[int]) -> int:
    """Core's GetElementCount: 0 for no dims, -1 when any dim is variable."""
    dims = list(dims)
    if not dims:
        return 0
    if WILDCARD in dims:
        return WILDCARD
    return math.prod(dims)


def _io_shape_rules(tensor: Any, max_batch_size: int, prefix: str) -> str | None:
    """Core's ValidateIOShape (R13-R19)."""
    if not tensor.name:
        return f"{prefix}must specify 'name'"
    prefix = f"{prefix}'{tensor.name}' "
    if tensor.data_type == 0:
        return f"{prefix}must specify 'data_type'"
    if not tensor.dims:
        return f"{prefix}must specify 'dims'"
    has_reshape = tensor.HasField("reshape")
    shape = list(tensor.reshape.shape)
    if has_reshape and not shape and max_batch_size == 0:
        return f"{prefix}cannot have empty reshape for non-batching model as scalar tensors are not supported"
    variable = f"{WILDCARD} to indicate a variable-size dimension"
    if any(d < 1 and d != WILDCARD for d in tensor.dims):
        return f"{prefix}dimension must be integer >= 1, or {variable}"
    if not has_reshape:
        return None
    if any(d < 1 and d != WILDCARD for d in shape):
        return f"{prefix}reshape dimensions must be integer >= 1, or {variable}"
    dims_size, reshape_size = _element_count(tensor.dims), _element_count(shape)
    if dims_size != reshape_size and (reshape_size != 0 or dims_size != 1):
        return f"{prefix}has different size for dims and reshape"
    if dims_size == WILDCARD:
        dims_chunks, reshape_chunks = _wildcard_chunks(tensor.dims), _wildcard_chunks(shape)
        if len(dims_chunks) != len(reshape_chunks):
            return f"{prefix}has different number of variable-size dimensions for dims and reshape"
        if dims_chunks != reshape_chunks:
            return f"{prefix}has different size for dims and reshape"
    return None


def _wildcard_chunks(dims: Iterable[int]) -> list[int]:
    """Element counts of the runs of fixed dims between variable dims: [2, 4, -1, 6] -> [8, 6]."""
    chunks, current = [], 1
    for dim in dims:
        if dim == WILDCARD:
            chunks.append(current)
            current = 1
        else:
            current *= dim
    return [*chunks, current]


def _batch_io_rules(config: ModelConfig) -> list[str]:
    """Core's ValidateBatchIO (R24-R27): one message per offending entry."""
    pb = model_config_pb2()
    inputs = {t.name for t in config.input}
    outputs = {t.name for t in config.output}
    found: list[str] = []
    for batch_input in config.batch_input:
        kind = pb.BatchInput.Kind.Name(batch_input.kind)
        if len(batch_input.source_input) != 1:
            found.append(f"batch input kind '{kind}' expects 1 source input, got {len(batch_input.source_input)}")
        elif batch_input.data_type not in (pb.TYPE_INT32, pb.TYPE_FP32):
            found.append("batch input data type must be TYPE_INT32 or TYPE_FP32")
        elif batch_input.source_input[0] not in inputs:
            found.append(f"unknown source input name '{batch_input.source_input[0]}'")
    for batch_output in config.batch_output:
        kind = pb.BatchOutput.Kind.Name(batch_output.kind)
        if len(batch_output.source_input) != 1:
            found.append(f"batch output kind '{kind}' expects 1 source input, got {len(batch_output.source_input)}")
            continue
        if batch_output.source_input[0] not in inputs:
            found.append(f"unknown source input name '{batch_output.source_input[0]}'")
            continue
        targets: set[str] = set()
        for target in batch_output.target_name:
            if target not in outputs:
                found.append(f"unknown target output name '{target}'")
                break
            if target in targets:
                found.append(f"target output name '{target}' can only be specified once")
                break
            targets.add(target)
    return found


# ================================================================ versions (R4, R5, R39)


def _versions_to_load(config: ModelConfig, model_dir: Path) -> tuple[list[int], list[str]]:
    """Core's VersionsToLoad: the versions the policy selects, and Triton's warnings for ignored folders."""
    existing: set[int] = set()
    ignored: list[str] = []
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
        return sorted({v for v in policy.specific.versions if v in existing}), ignored
    if choice == "latest":
        return sorted(existing, reverse=True)[: policy.latest.num_versions][::-1], ignored
    return sorted(existing), ignored


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
    names = {config.default_model_filename or default, *config.cc_model_filenames.values()}
    instance = f"{config.instance_group[0].name}_0" if config.instance_group else f"{config.name}_0"
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
    for state in config.sequence_batching.state:
        message = _state_rules(state, seen, config.max_batch_size, model_dir)
        if message:
            found.append(message)
    return found


def _state_rules(state: Any, seen: set[str], max_batch_size: int, model_dir: Path) -> str | None:
    name = state.input_name
    if state.use_growable_memory and not state.use_same_buffer_for_input_output:
        return (
            f"In order to 'use_growable_memory', you must also enable 'use_single_buffer' for state input name "
            f"'{name}'."
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
    return found


def _python_env_rules(config: ModelConfig, model_dir: Path) -> list[str]:
    """EXECUTION_ENV_PATH of a python model, when it points into the model directory (§4)."""
    if config.backend != "python" or "EXECUTION_ENV_PATH" not in config.parameters:
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
    """R31: a custom batching library must stay inside the model repository."""
    if repo is None or "TRITON_BATCH_STRATEGY_PATH" not in config.parameters:
        return []
    path = Path(config.parameters["TRITON_BATCH_STRATEGY_PATH"].string_value)
    if not path.is_absolute():
        path = model_dir / path
    if not path.resolve().is_relative_to(repo.resolve()):
        return ["Batching library path escapes model repository."]
    return []


# ================================================================ dependency graph and ensembles across models


def _check_dependencies(models: dict[str, _Model]) -> None:
    """Steps 6 and 9: the dependency graph of the models that polled, then each ensemble against its models."""
    nodes = {name: m for name, m in models.items() if not m.findings.poll}
    upstreams = {
        name: list(dict.fromkeys(s.model_name for s in m.config.ensemble_scheduling.step))
        for name, m in nodes.items()
        if m.is_ensemble
    }
    status: dict[str, str] = {}
    for name, ups in upstreams.items():
        missing = sorted({u for u in ups if u not in nodes})
        if missing:  # R53
            status[name] = f"ensemble {name} contains models that are not available or ambiguous: {', '.join(missing)}"
    for name in upstreams:
        if name not in status:
            last = _cycle_back_to(name, upstreams)
            if last is not None:  # R54
                status[name] = f"circular dependency between ensembles: {name} -> ... -> {last} -> {name}"
    for name, message in status.items():
        nodes[name].cross.append(message)
    resolver = _EnsembleResolver(nodes, upstreams, status)
    for name in nodes:
        resolver.resolve(name)


def _cycle_back_to(start: str, upstreams: Mapping[str, list[str]]) -> str | None:
    """The ensemble through which ``start`` depends on itself, if any (depth first, in step order)."""
    stack, seen = [start], {start}
    while stack:
        current = stack.pop()
        for up in upstreams.get(current, []):
            if up == start:
                return current
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return None


class _EnsembleResolver:
    """Checks ensembles upstream-first, as Triton loads them, deriving each ensemble's decoupled flag (R62)."""

    def __init__(self, nodes: dict[str, _Model], upstreams: dict[str, list[str]], status: dict[str, str]) -> None:
        self.nodes, self.upstreams, self.status = nodes, upstreams, status
        self.decoupled: dict[str, bool] = {}
        self.failed_load: dict[str, str] = {}
        self.done: set[str] = set()

    def loaded(self, name: str) -> set[int]:
        return set() if name in self.failed_load else self.nodes[name].findings.loaded_versions()

    def load_error(self, name: str) -> str:
        return self.failed_load.get(name) or self.nodes[name].findings.load_error()

    def resolve(self, name: str) -> None:
        if name in self.done:
            return
        self.done.add(name)
        model = self.nodes[name]
        if not model.is_ensemble:
            self.decoupled[name] = model.config.model_transaction_policy.decoupled
            return
        if name in self.status:
            return
        errors = self._check_upstreams(name)  # CheckNode (R55, R56)
        if not errors:
            configs = {up: self.nodes[up].config for up in self.upstreams[name]}
            errors, decoupled = _ensemble_cross_rules(model.config, configs, self.decoupled)
            self.decoupled[name] = decoupled
        if errors:
            self.status[name] = errors[0]
            model.cross.extend(errors)
            return
        if self.decoupled[name] and model.config.response_cache.enable:  # R63: Model::Init re-runs R66
            message = _decoupled_cache_message(name)
            model.cross.append(message)
            self.failed_load[name] = message

    def _check_upstreams(self, name: str) -> list[str]:
        required: dict[str, set[int]] = {}
        for step in self.nodes[name].config.ensemble_scheduling.step:
            required.setdefault(step.model_name, set()).add(step.model_version)
        errors: list[str] = []
        for up, versions in required.items():
            self.resolve(up)
            loaded = self.loaded(up)
            if up in self.status:
                errors.append(
                    f"ensemble '{name}' depends on '{up}' which is not valid. Model '{up}' failed with error: "
                    f"{self.status[up]}"
                )
            elif not loaded:
                errors.append(
                    f"ensemble '{name}' depends on '{up}' which has no loaded version. Model '{up}' loading failed "
                    f"with error: {self.load_error(up)}"
                )
            else:
                errors += [
                    f"ensemble '{name}' depends on '{up}' whose required version {v} is not loaded."
                    for v in sorted(versions)
                    if v != -1 and v not in loaded
                ]
        return errors


@dataclass(eq=False)
class _TensorNode:
    """One ensemble tensor as inferred from a model (core's TensorNode in ensemble_utils.cc)."""

    model: str
    dtype: int = 0
    dims: tuple[int, ...] = ()
    full_dims: tuple[int, ...] = ()
    is_decoupled: bool = False
    label: int = 0
    visited: bool = False
    prev: list[_TensorNode] = field(default_factory=list)
    next: list[_TensorNode] = field(default_factory=list)
    sibling: _TensorNode | None = None

    @classmethod
    def inferred(cls, model: str, batching: bool, dtype: int, dims: Iterable[int]) -> _TensorNode:
        dims = tuple(dims)
        return cls(model, dtype, dims, ((WILDCARD,) if batching else ()) + dims)


def _dims_match(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return len(a) == len(b) and all(x == y or WILDCARD in (x, y) for x, y in zip(a, b, strict=True))


def _dims_str(dims: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _consistency(lhs: _TensorNode, rhs: _TensorNode, prefix: str) -> str | None:
    """R60/R61: dtype equal; shapes equal with -1 wildcards, or equal once the batch dim is added."""
    if lhs.dtype != rhs.dtype:
        name = model_config_pb2().DataType.Name
        return (
            f"{prefix}inconsistent data type: {name(lhs.dtype)} is inferred from model {lhs.model} while "
            f"{name(rhs.dtype)} is inferred from model {rhs.model}"
        )
    if not _dims_match(lhs.dims, rhs.dims) and not _dims_match(lhs.full_dims, rhs.full_dims):
        return (
            f"{prefix}inconsistent shape: {_dims_str(lhs.full_dims)} is inferred from model {lhs.model} while "
            f"{_dims_str(rhs.full_dims)} is inferred from model {rhs.model}"
        )
    return None


def _ensemble_cross_rules(
    config: ModelConfig, composing: Mapping[str, ModelConfig], decoupled: Mapping[str, bool]
) -> tuple[list[str], bool]:
    """Core's ValidateEnsembleConfig (R57-R62): problems, and the ensemble's derived decoupled flag."""
    ensemble, batching = config.name, config.max_batch_size > 0
    tensors: dict[str, _TensorNode] = {}
    for tensor in config.input:
        dims = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
        tensors.setdefault(tensor.name, _TensorNode.inferred(ensemble, batching, tensor.data_type, dims))
    sink = _TensorNode(ensemble)
    for tensor in config.output:
        dims = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
        node = tensors.setdefault(tensor.name, _TensorNode.inferred(ensemble, batching, tensor.data_type, dims))
        sink.prev.append(node)
        node.next.append(sink)
    errors: list[str] = []
    for step in config.ensemble_scheduling.step:
        model = composing[step.model_name]
        if model.max_batch_size != 0 and model.max_batch_size < config.max_batch_size:  # R57
            errors.append(
                f"ensemble {ensemble} allows maximum batch size {config.max_batch_size}, but it contains model "
                f"{step.model_name} which only allows maximum batch size to be {model.max_batch_size}"
            )
        errors += _tensor_mapping_rules(ensemble, step, model, decoupled.get(step.model_name, False), tensors)
    if errors:
        return errors, False
    return _decoupled_flow_rules(config, tensors)


def _tensor_mapping_rules(
    ensemble: str, step: Any, model: ModelConfig, decoupled: bool, tensors: dict[str, _TensorNode]
) -> list[str]:
    """Core's ValidateTensorMapping for one step (R58-R61), then links the step into the graph."""
    name, batching = step.model_name, model.max_batch_size > 0
    prefix = f"in ensemble {ensemble}, ensemble tensor "
    inputs = {t.name: t for t in model.input}
    outputs = {t.name: t for t in model.output}
    errors = [
        f"{prefix}{tensor} is mapping to non-existing input {key} in model {name}"
        for key, tensor in sorted(step.input_map.items())
        if key not in inputs
    ]
    for model_input in model.input:
        tensor = step.input_map.get(model_input.name)
        if tensor is None:
            if not model_input.optional:
                errors.append(
                    f"in ensemble {ensemble}, input {model_input.name} in model {name} is not mapped to any ensemble "
                    "tensors"
                )
            continue
        node = _TensorNode.inferred(name, batching, model_input.data_type, model_input.dims)
        errors += _register(tensors, tensor, node, f"{prefix}{tensor}: ")
    errors += [
        f"{prefix}{tensor} is mapped from non-existing output {key} in model {name}"
        for key, tensor in sorted(step.output_map.items())
        if key not in outputs
    ]
    sibling = _TensorNode(name)
    produced: list[_TensorNode] = []
    for key, tensor in sorted(step.output_map.items()):
        if key not in outputs:
            continue
        model_output = outputs[key]
        node = _TensorNode.inferred(name, batching, model_output.data_type, model_output.dims)
        errors += _register(tensors, tensor, node, f"{prefix}{tensor}: ")
        tensors[tensor].sibling = sibling
        produced.append(tensors[tensor])
    consumed = [tensors[t] for _k, t in sorted(step.input_map.items()) if t in tensors]
    for node in produced:
        node.is_decoupled = decoupled
        for source in consumed:
            node.prev.append(source)
            source.next.append(node)
    return errors


def _register(tensors: dict[str, _TensorNode], tensor: str, node: _TensorNode, prefix: str) -> list[str]:
    known = tensors.get(tensor)
    if known is None:
        tensors[tensor] = node
        return []
    message = _consistency(known, node, prefix)
    return [message] if message else []


def _decoupled_flow_rules(config: ModelConfig, tensors: dict[str, _TensorNode]) -> tuple[list[str], bool]:
    """R62: label each tensor with the decoupled producer it descends from; a step may not join two labels."""
    labels = 0
    queue: deque[_TensorNode] = deque()
    for tensor in config.input:
        node = tensors[tensor.name]
        node.visited = True
        queue.append(node)
    while queue:
        current = queue.popleft()
        for nxt in current.next:
            if nxt.visited or not all(p.visited for p in nxt.prev):
                continue
            label = nxt.prev[0].label
            if any(p.label != label for p in nxt.prev):
                return [
                    f"in ensemble {config.name}, step of model '{nxt.model}' receives inputs originated from "
                    "different decoupled models"
                ], False
            if nxt.sibling is not None and nxt.sibling.visited:
                nxt.label = nxt.sibling.label
            else:
                if nxt.is_decoupled:
                    labels += 1
                nxt.label = labels if nxt.is_decoupled else label
                if nxt.sibling is not None:
                    nxt.sibling.label, nxt.sibling.visited = nxt.label, True
            nxt.visited = True
            queue.append(nxt)
    return [], labels != 0


# ================================================================ repository-wide rules


def _check_rate_limiter(models: dict[str, _Model]) -> None:
    """R44: a rate-limiter resource is either global or per-device across the whole repository."""
    scopes: dict[str, set[bool]] = {}
    users: dict[str, list[_Model]] = {}
    for model in models.values():
        if model.findings.poll or model.is_ensemble:
            continue
        for group in model.config.instance_group:
            for resource in group.rate_limiter.resources:
                scopes.setdefault(resource.name, set()).add(getattr(resource, "global"))
                if model not in users.setdefault(resource.name, []):
                    users[resource.name].append(model)
    for resource, kinds in sorted(scopes.items()):
        if len(kinds) > 1:
            for model in users[resource]:
                model.cross.append(
                    f'Resource "{resource}" is present as both global and device-specific resource in the model '
                    "configuration."
                )


def _dedupe(messages: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(messages))
