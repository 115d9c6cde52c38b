"""The ``gpu`` target of an LLM: TensorRT-LLM's Triton model set, rendered as ModelConfig messages.

    preprocessing (python) ─► tensorrt_llm (backend "tensorrtllm", an engine) ─► postprocessing (python)
                                    wired as the `llm` ensemble; optionally tensorrt_llm_bls

Model names, tensor names, data types, dims and parameter keys are upstream's (``builders/data/
trtllm_templates.json``, derived from NVIDIA/TensorRT-LLM ``triton_backend/all_models/inflight_batcher_llm``), so
clients written for upstream's ``ensemble`` work unchanged. Values upstream leaves to fill_template.py come from
typed settings (``trtllm_params``); nothing is rendered as ``${...}``.

The tensor contract (``tensorrt_llm_signature``, ``preprocessing_signature``, ``postprocessing_signature``,
``llm_ensemble_wiring``, ``llm_ensemble_config``) does not depend on the backend: the ``cpu`` target serves the
same contract with python-backend models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tritonforge import python_backends
from tritonforge.builders.model_configs import ModelSet, Signature, TensorSpec, render_model
from tritonforge.ensembles.dag import Ensemble, ModelIO
from tritonforge.errors import Problem, SpecError
from tritonforge.naming import LLMNames
from tritonforge.repository import FileContent
from tritonforge.spec import DynamicBatching, InstanceGroup, QueuePolicy, Serving
from tritonforge.trtllm.compatibility import gpus_needed
from tritonforge.trtllm.params import (
    BLSParams,
    LLMServing,
    PostprocessingParams,
    PreprocessingParams,
    TensorRTLLMParams,
    model_template,
    parameter_strings,
)

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

TOKENIZER_FOLDER = "tokenizer"  # inside a model's version folder
# python-backend sources for the python models, by role (python_backends.source names)
PYTHON_SOURCES = {"preprocessing": "llm_preprocessing", "postprocessing": "llm_postprocessing", "bls": "llm_bls"}


# ================================================================ the tensor contract (backend-independent)


def _data_type(entry: Mapping[str, Any], types: Mapping[str, str]) -> str:
    data_type = entry["data_type"]
    if isinstance(data_type, dict):  # templated upstream: ${logits_datatype} and friends
        return types[data_type["templated"]]
    return data_type


def _specs(entries: list[dict[str, Any]], types: Mapping[str, str]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            e["name"],
            _data_type(e, types),
            tuple(e["dims"]),
            allow_ragged_batch=bool(e.get("allow_ragged_batch")),
            optional=bool(e.get("optional")),
            reshape=tuple(e["reshape"]) if "reshape" in e else None,
        )
        for e in entries
    )


def _types(
    logits_datatype: str, encoder_input_features_data_type: str, prompt_embedding_table_data_type: str
) -> dict[str, str]:
    return {
        "logits_datatype": logits_datatype,
        "encoder_input_features_data_type": encoder_input_features_data_type,
        "prompt_embedding_table_data_type": prompt_embedding_table_data_type,
    }


def _signature(model: str, types: Mapping[str, str]) -> Signature:
    entry = model_template(model)
    return Signature(_specs(entry["inputs"], types), _specs(entry["outputs"], types))


def tensorrt_llm_signature(
    *,
    logits_datatype: str = "TYPE_FP32",
    encoder_input_features_data_type: str = "TYPE_FP16",
    prompt_embedding_table_data_type: str = "TYPE_FP16",
) -> Signature:
    """Inputs and outputs of upstream's ``tensorrt_llm`` model (input_ids, input_lengths, ... -> output_ids, ...)."""
    types = _types(logits_datatype, encoder_input_features_data_type, prompt_embedding_table_data_type)
    return _signature("tensorrt_llm", types)


def preprocessing_signature() -> Signature:
    """Inputs and outputs of upstream's ``preprocessing`` model (QUERY, REQUEST_OUTPUT_LEN, ... -> INPUT_ID, ...)."""
    return _signature("preprocessing", {})


def postprocessing_signature() -> Signature:
    """Inputs and outputs of upstream's ``postprocessing`` model (TOKENS_BATCH, SEQUENCE_LENGTH -> OUTPUT)."""
    return _signature("postprocessing", {})


def bls_signature(
    *, logits_datatype: str = "TYPE_FP32", prompt_embedding_table_data_type: str = "TYPE_FP16"
) -> Signature:
    """Inputs and outputs of upstream's ``tensorrt_llm_bls`` model (the ensemble's contract plus BLS extras)."""
    return _signature("tensorrt_llm_bls", _types(logits_datatype, "TYPE_FP16", prompt_embedding_table_data_type))


def ensemble_signature(
    *, logits_datatype: str = "TYPE_FP32", prompt_embedding_table_data_type: str = "TYPE_FP16"
) -> Signature:
    """The ``llm`` ensemble's inputs and outputs: upstream's ``ensemble`` (text_input, max_tokens, ... -> text_output).

    ``prompt_embedding_table`` follows ``prompt_embedding_table_data_type`` (upstream hard-codes TYPE_FP16 here
    while the tensorrt_llm model templates it; keeping them equal keeps the ensemble loadable).
    """
    types = _types(logits_datatype, "TYPE_FP16", prompt_embedding_table_data_type)
    sig = _signature("ensemble", types)
    inputs = tuple(
        replace(t, data_type=prompt_embedding_table_data_type) if t.name == "prompt_embedding_table" else t
        for t in sig.inputs
    )
    return Signature(inputs, sig.outputs)


@dataclass(frozen=True)
class ContractAdditions:
    """What tritonforge adds to upstream's tensor contract (the chat template switch, adapters by name, LoRA weights
    resent by preprocessing), declared before anything is rendered: every config is written once, and the ensemble
    is built with the DAG API (``ensembles.dag``) from the rendered members, as every other ensemble is.

    Upstream clients never send the added inputs (all optional), so they work unchanged."""

    ensemble_inputs: tuple[TensorSpec, ...] = ()  # after upstream's, on the ensemble and on tensorrt_llm_bls
    preprocessing_inputs: tuple[TensorSpec, ...] = ()
    preprocessing_outputs: tuple[TensorSpec, ...] = ()
    preprocessing_input_map: Mapping[str, str] = field(default_factory=dict)  # preprocessing input -> tensor
    preprocessing_output_map: Mapping[str, str] = field(default_factory=dict)
    tensorrt_llm_input_map: Mapping[str, str] = field(default_factory=dict)  # replaces upstream's sources
    data_types: Mapping[str, str] = field(default_factory=dict)  # input name -> type (tensorrt_llm, ensemble, BLS)
    parameters: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # role -> extra string parameters


def _retyped(specs: tuple[TensorSpec, ...], data_types: Mapping[str, str]) -> tuple[TensorSpec, ...]:
    return tuple(replace(t, data_type=data_types[t.name]) if t.name in data_types else t for t in specs)


@dataclass(frozen=True)
class EnsembleStep:
    model: str  # the Triton model name
    role: str  # upstream's model name: preprocessing, tensorrt_llm or postprocessing
    input_map: Mapping[str, str]  # the model's input -> ensemble tensor
    output_map: Mapping[str, str]  # the model's output -> ensemble tensor


@dataclass(frozen=True)
class EnsembleWiring:
    name: str
    steps: tuple[EnsembleStep, ...]
    signature: Signature


def llm_ensemble_wiring(
    names: LLMNames = LLMNames(),
    *,
    logits_datatype: str = "TYPE_FP32",
    prompt_embedding_table_data_type: str = "TYPE_FP16",
    additions: ContractAdditions = ContractAdditions(),
) -> EnsembleWiring:
    """Upstream's ensemble steps (input_map/output_map per step), with this set's model names and tritonforge's
    additions."""
    extra_in = {"preprocessing": additions.preprocessing_input_map, "tensorrt_llm": additions.tensorrt_llm_input_map}
    extra_out = {"preprocessing": additions.preprocessing_output_map}
    steps = tuple(
        EnsembleStep(
            names.of(s["model"]),
            s["model"],
            {**s["input_map"], **extra_in.get(s["model"], {})},
            {**s["output_map"], **extra_out.get(s["model"], {})},
        )
        for s in model_template("ensemble")["steps"]
    )
    signature = ensemble_signature(
        logits_datatype=logits_datatype, prompt_embedding_table_data_type=prompt_embedding_table_data_type
    )
    inputs = _retyped(signature.inputs + additions.ensemble_inputs, additions.data_types)
    return EnsembleWiring(names.ensemble, steps, Signature(inputs, signature.outputs))


def llm_ensemble_config(
    wiring: EnsembleWiring,
    *,
    max_batch_size: int,
    members: Mapping[str, ModelConfig],
    parameters: Mapping[str, str] | None = None,
) -> ModelConfig:
    """The ensemble ModelConfig of a wiring, built with the DAG API from the members' rendered configs
    (``members``: ModelConfig by Triton name), so Triton's wiring rules are checked here, while it is written.

    Members are compared by ``dims`` as Triton does (not ``reshape``): upstream's wiring relies on that
    (``_REQUEST_INPUT_LEN`` [1] feeds ``input_lengths`` dims [1] reshape []). The outputs keep upstream's declared
    types and shapes, checked against their producers."""
    dag = Ensemble(wiring.name, max_batch_size=max_batch_size)
    dag.inputs(wiring.signature.inputs)
    for s in wiring.steps:
        dag.step(ModelIO.from_config(members[s.model]), inputs=s.input_map, outputs=s.output_map)
    for t in wiring.signature.outputs:
        dag.output(t.name, data_type=t.data_type, dims=t.dims)
    return dag.config(parameters=parameters)


# ================================================================ the gpu model set


def _queue(serving: LLMServing) -> DynamicBatching:
    return DynamicBatching(
        preferred_batch_sizes=[serving.triton_max_batch_size],
        max_queue_delay_microseconds=serving.max_queue_delay_microseconds,
        default_queue_policy=QueuePolicy(max_queue_size=serving.max_queue_size),
    )


def _serving(serving: LLMServing, batching: DynamicBatching | None, count: int) -> Serving:
    return Serving(
        max_batch_size=serving.triton_max_batch_size,
        dynamic_batching=batching,
        instance_groups=[InstanceGroup(count=count, kind="cpu")],
    )


def _python_source(role: str, given: Mapping[str, FileContent] | None, notes: list[str], model: str) -> dict[str, Any]:
    """The version folder's files: the shipped model.py (or the one given) and the shared modules it loads."""
    try:
        files: dict[str, Any] = dict(python_backends.sources(PYTHON_SOURCES[role]))
    except (ValueError, OSError):
        if given is not None and role in given:
            return {"model.py": given[role]}
        notes.append(
            f"{model}: no model.py shipped for the {role} model (python_backends/{PYTHON_SOURCES[role]}); "
            "supply python_sources or copy it in before serving"
        )
        return {}
    if given is not None and role in given:
        files["model.py"] = given[role]
    return files


def bls_step_names(tensorrt_llm_model_name: str) -> dict[str, str]:
    """The step models tensorrt_llm_bls calls when its config does not name them: the engine model's name with
    `tensorrt_llm` replaced (python_backends/llm_bls/model.py applies the same rule)."""
    base = tensorrt_llm_model_name if "tensorrt_llm" in tensorrt_llm_model_name else "tensorrt_llm"
    return {
        "preprocessing_model_name": base.replace("tensorrt_llm", "preprocessing"),
        "postprocessing_model_name": base.replace("tensorrt_llm", "postprocessing"),
    }


def check_against_engine(params: TensorRTLLMParams, engine: Any) -> list[Problem]:
    """Runtime parameters that the engine (``trtllm_engine.EngineSettings``) cannot honour."""
    problems: list[Problem] = []

    def bad(field: str, message: str) -> None:
        problems.append(Problem(f"tensorrt_llm.{field}", message))

    if params.max_beam_width > engine.max_beam_width:
        bad("max_beam_width", f"{params.max_beam_width} exceeds the engine's max_beam_width {engine.max_beam_width}")
    paged = engine.paged_kv_cache and engine.use_paged_context_fmha
    if params.enable_kv_cache_reuse and not paged:
        bad("enable_kv_cache_reuse", "the engine was not built with paged_kv_cache and use_paged_context_fmha")
    if params.enable_chunked_context and not paged:
        bad("enable_chunked_context", "the engine was not built with paged_kv_cache and use_paged_context_fmha")
    for mode in ("medusa", "eagle"):
        if params.decoding_mode == mode and engine.speculative.mode != mode:
            bad("decoding_mode", f"'{mode}' needs an engine built with speculative mode '{mode}'")
    if params.decoding_mode == "beam_search" and engine.max_beam_width == 1:
        bad("decoding_mode", "'beam_search' needs an engine built with max_beam_width > 1")
    for message in gpus_needed(engine, params.gpu_device_ids):  # the one copy of the rule
        bad("gpu_device_ids", message.removeprefix("gpu_device_ids "))
    return problems


def gpu_llm_model_set(
    names: LLMNames = LLMNames(),
    serving: LLMServing = LLMServing(),
    params: TensorRTLLMParams = TensorRTLLMParams(),
    *,
    engine_dir_in_container: str,
    preprocessing: PreprocessingParams = PreprocessingParams(),
    postprocessing: PostprocessingParams = PostprocessingParams(),
    bls: BLSParams | None = None,
    tokenizer_files: Mapping[str, FileContent] | None = None,
    python_sources: Mapping[str, FileContent] | None = None,
    engine: Any = None,
    additions: ContractAdditions = ContractAdditions(),
    tensorrt_llm_model: tuple[ModelConfig, Mapping[str, FileContent], list[str]] | None = None,
) -> ModelSet:
    """Render preprocessing, tensorrt_llm, postprocessing, the ensemble and (with ``bls``) tensorrt_llm_bls.

    ``engine_dir_in_container`` is the engine folder as the server sees it (``gpt_model_path``).
    ``tokenizer_files`` ({file name: content}) ship in the pre/post-processing version folders under
    ``tokenizer/``; their ``tokenizer_dir`` is then ``tokenizer`` (relative to the version folder) unless set.
    ``python_sources`` ({'preprocessing'|'postprocessing'|'bls': model.py}) override the shipped model.py files.
    ``engine`` (``EngineSettings``) cross-checks the runtime parameters against how the engine was built.
    ``additions`` are tritonforge's tensors and parameters beyond upstream's contract. ``tensorrt_llm_model``
    (config, files, notes) serves the ``tensorrt_llm`` step instead of the tensorrtllm backend (the cpu target's
    CPU engine, rendered with the same contract).
    Raises SpecError listing every conflict.
    """
    problems: list[Problem] = []
    if params.gpt_model_path not in (None, engine_dir_in_container):
        problems.append(
            Problem(
                "tensorrt_llm.gpt_model_path",
                f"{params.gpt_model_path!r} differs from engine_dir_in_container {engine_dir_in_container!r}",
            )
        )
    if engine is not None:
        problems += check_against_engine(params, engine)
    for where, value in (
        ("preprocessing", preprocessing.tokenizer_dir),
        ("postprocessing", postprocessing.tokenizer_dir),
    ):
        if value is None and not tokenizer_files:
            problems.append(
                Problem(
                    f"{where}.tokenizer_dir", "give tokenizer_files to ship, or the tokenizer folder in the container"
                )
            )
    if problems:
        raise SpecError(problems, "cannot render the TensorRT-LLM model set")

    notes: list[str] = []
    trt = params.model_copy(update={"gpt_model_path": engine_dir_in_container})
    types = _types(trt.logits_datatype, trt.encoder_input_features_data_type, trt.prompt_embedding_table_data_type)
    extra = additions.parameters
    out = ModelSet()

    # preprocessing
    pre_values = preprocessing.values()
    pre_values["tokenizer_dir"] = preprocessing.tokenizer_dir or TOKENIZER_FOLDER
    if preprocessing.multimodal_model_path and preprocessing.gpt_model_path is None:
        pre_values["gpt_model_path"] = engine_dir_in_container
    pre_sig = _signature("preprocessing", types)
    pre_cfg, n1 = render_model(
        names.preprocessing,
        _serving(serving, _queue(serving), serving.preprocessing_instance_count),
        Signature(pre_sig.inputs + additions.preprocessing_inputs, pre_sig.outputs + additions.preprocessing_outputs),
        target="gpu",
        backend="python",
        parameters={
            **parameter_strings("preprocessing", pre_values, omit_unset=False),
            **extra.get("preprocessing", {}),
        },
    )
    if tensorrt_llm_model is not None:
        trt_cfg, trt_files, n2 = tensorrt_llm_model
    else:  # KIND_CPU as upstream: the backend places the engine on GPUs itself
        trt_sig = _signature("tensorrt_llm", types)
        trt_cfg, n2 = render_model(
            names.tensorrt_llm,
            _serving(serving, _queue(serving), 1),
            Signature(_retyped(trt_sig.inputs, additions.data_types), trt_sig.outputs),
            target="gpu",
            backend=trt.triton_backend,
            parameters={
                **parameter_strings("tensorrt_llm", trt.values(), omit_unset=True),
                **extra.get("tensorrt_llm", {}),
            },
            decoupled=trt.decoupled_mode,
        )
        trt_files = {}
    # postprocessing: `dynamic_batching {}` as upstream
    post_values = postprocessing.values()
    post_values["tokenizer_dir"] = postprocessing.tokenizer_dir or TOKENIZER_FOLDER
    post_cfg, n3 = render_model(
        names.postprocessing,
        _serving(serving, DynamicBatching(), serving.postprocessing_instance_count),
        _signature("postprocessing", types),
        target="gpu",
        backend="python",
        parameters=parameter_strings("postprocessing", post_values, omit_unset=False),
    )
    notes += n1 + n2 + n3

    out.add(pre_cfg, _python_source("preprocessing", python_sources, notes, names.preprocessing))
    out.add(trt_cfg, trt_files)
    out.add(post_cfg, _python_source("postprocessing", python_sources, notes, names.postprocessing))
    if tokenizer_files:
        shipped = {f"{TOKENIZER_FOLDER}/{name}": content for name, content in tokenizer_files.items()}
        if preprocessing.tokenizer_dir is None:
            out.add_files(names.preprocessing, shipped)
        if postprocessing.tokenizer_dir is None:
            out.add_files(names.postprocessing, shipped)
        notes.append(
            f"{names.preprocessing}, {names.postprocessing}: tokenizer_dir '{TOKENIZER_FOLDER}' is relative to the "
            "model's version folder (tritonforge's python models resolve it; upstream's model.py needs an absolute "
            "path)"
        )
    if trt.triton_backend == "python" and tensorrt_llm_model is None:
        notes.append(
            f"{names.tensorrt_llm}: triton_backend 'python' runs TensorRT-LLM's own tensorrt_llm/1/model.py, which "
            "tritonforge does not ship; copy it from the TensorRT-LLM release matching the container"
        )

    wiring = llm_ensemble_wiring(
        names,
        logits_datatype=trt.logits_datatype,
        prompt_embedding_table_data_type=trt.prompt_embedding_table_data_type,
        additions=additions,
    )
    ensemble = llm_ensemble_config(
        wiring, max_batch_size=serving.triton_max_batch_size, members=out.configs, parameters=extra.get("ensemble")
    )
    out.add(ensemble, {})

    if bls is not None:
        bls_values = bls.values()
        bls_values["tensorrt_llm_model_name"] = bls.tensorrt_llm_model_name or names.tensorrt_llm
        bls_sig = bls_signature(
            logits_datatype=trt.logits_datatype, prompt_embedding_table_data_type=trt.prompt_embedding_table_data_type
        )
        # the BLS finds its steps by the engine's name (chat_tensorrt_llm -> chat_preprocessing, ...); names that
        # do not follow that pattern are written out (keys beyond upstream's, read by tritonforge's model.py)
        bls_parameters = parameter_strings("tensorrt_llm_bls", bls_values, omit_unset=False)
        derived = bls_step_names(bls_values["tensorrt_llm_model_name"])
        for key, name in (("preprocessing_model_name", names.preprocessing),
                          ("postprocessing_model_name", names.postprocessing)):
            if derived[key] != name:
                bls_parameters[key] = name
        bls_cfg, n4 = render_model(
            names.bls,
            _serving(serving, None, serving.bls_instance_count),
            Signature(_retyped(bls_sig.inputs + additions.ensemble_inputs, additions.data_types), bls_sig.outputs),
            target="gpu",
            backend="python",
            parameters=bls_parameters,
            decoupled=trt.decoupled_mode,
        )
        notes += n4
        out.add(bls_cfg, _python_source("bls", python_sources, notes, names.bls))
    out.notes += notes
    return out
