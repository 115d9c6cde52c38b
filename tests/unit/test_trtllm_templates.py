"""The gpu LLM model set against TensorRT-LLM's own templates (kept as data in tritonforge/trtllm/data/trtllm_templates.json).

Acceptance: the rendered set has upstream's model names, tensor names, data types, dims and parameter keys;
nothing is rendered as ``${...}``; typed defaults are upstream's; bad combinations are refused with clear messages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from tritonforge.builders.llm_gpu import (
    check_against_engine,
    gpu_llm_model_set,
    llm_ensemble_wiring,
    postprocessing_signature,
    preprocessing_signature,
    tensorrt_llm_signature,
)
from tritonforge.config_io import model_config_pb2
from tritonforge.errors import SpecError
from tritonforge.naming import LLMNames
from tritonforge.repository import materialize
from tritonforge.trtllm.engine_settings import EngineSettings
from tritonforge.trtllm.params import (
    DATA_FILE,
    BLSParams,
    LLMServing,
    PostprocessingParams,
    PreprocessingParams,
    TensorRTLLMParams,
    model_template,
    parameter_keys,
    parameter_string,
    parse_params,
    required_parameter_keys,
    templates,
    upstream_defaults,
)
from tritonforge.validator import check_repository

UPSTREAM_NAMES = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")
DEFAULT_TYPES = {
    "logits_datatype": "TYPE_FP32",
    "encoder_input_features_data_type": "TYPE_FP16",
    "prompt_embedding_table_data_type": "TYPE_FP16",
}
SOURCES = {"preprocessing": b"# placeholder\n", "postprocessing": b"# placeholder\n", "bls": b"# placeholder\n"}
TOKENIZER = {"tokenizer.json": b"{}", "tokenizer_config.json": b"{}"}


def render(**kwargs):
    kwargs.setdefault("engine_dir_in_container", "/engines/llama")
    kwargs.setdefault("tokenizer_files", TOKENIZER)
    kwargs.setdefault("python_sources", SOURCES)
    kwargs.setdefault("bls", BLSParams())
    return gpu_llm_model_set(**kwargs)


def upstream_names() -> LLMNames:
    return LLMNames(ensemble="ensemble")  # every other default is upstream's name already


def expected_tensors(entries, types=DEFAULT_TYPES):
    out = []
    for e in entries:
        dtype = e["data_type"]
        if isinstance(dtype, dict):
            dtype = types[dtype["templated"]]
        out.append(
            (
                e["name"],
                dtype,
                list(e["dims"]),
                bool(e.get("optional")),
                bool(e.get("allow_ragged_batch")),
                e.get("reshape"),
            )
        )
    return out


def rendered_tensors(tensors, is_input):
    pb = model_config_pb2()
    return [
        (
            t.name,
            pb.DataType.Name(t.data_type),
            list(t.dims),
            bool(is_input and t.optional),
            bool(is_input and t.allow_ragged_batch),
            list(t.reshape.shape) if t.HasField("reshape") else None,
        )
        for t in tensors
    ]


# ------------------------------------------------------------------------------------------------ the data file


def test_data_file_records_upstream_and_has_no_placeholders():
    data = templates()
    assert data["upstream"]["repository"] == "NVIDIA/TensorRT-LLM"
    assert set(data["upstream"]["files"]) == set(UPSTREAM_NAMES)
    for entry in data["upstream"]["files"].values():
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"])
        assert entry["path"].startswith("triton_backend/all_models/inflight_batcher_llm/")
    assert set(data["models"]) == set(UPSTREAM_NAMES)
    assert "${" not in DATA_FILE.read_text(encoding="utf-8")


def test_data_file_tensor_names_are_unique_per_model():
    for name in UPSTREAM_NAMES:
        entry = model_template(name)
        for side in ("inputs", "outputs"):
            names = [t["name"] for t in entry[side]]
            assert len(names) == len(set(names)), (name, side)


def test_unknown_template_is_named():
    with pytest.raises(KeyError, match="known: preprocessing"):
        model_template("nope")


# ------------------------------------------------------------------------------------------------ the acceptance test


def test_rendered_model_names_are_upstreams():
    ms = render(names=upstream_names())
    assert set(ms.configs) == set(UPSTREAM_NAMES)
    assert {p.split("/")[0] for p in ms.files} == set(UPSTREAM_NAMES)


def test_default_names_keep_upstream_names_but_call_the_ensemble_llm():
    ms = render()
    assert set(ms.configs) == {"preprocessing", "tensorrt_llm", "postprocessing", "llm", "tensorrt_llm_bls"}


@pytest.mark.parametrize("model", UPSTREAM_NAMES)
def test_tensors_match_upstream(model):
    config = render(names=upstream_names()).configs[model]
    entry = model_template(model)
    assert rendered_tensors(config.input, True) == expected_tensors(entry["inputs"])
    assert rendered_tensors(config.output, False) == expected_tensors(entry["outputs"])


def test_backends_platform_instances_and_decoupling_match_upstream():
    configs = render(names=upstream_names(), params=TensorRTLLMParams(decoupled_mode=True)).configs
    pb = model_config_pb2()
    assert configs["ensemble"].platform == "ensemble"
    for name in ("preprocessing", "postprocessing", "tensorrt_llm_bls"):
        assert configs[name].backend == model_template(name)["backend"] == "python"
    assert configs["tensorrt_llm"].backend == "tensorrtllm"
    assert "tensorrtllm" in model_template("tensorrt_llm")["backend"]["allowed"]
    for name in ("preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"):
        groups = configs[name].instance_group
        assert [pb.ModelInstanceGroup.Kind.Name(g.kind) for g in groups] == [
            model_template(name)["instance_group"]["kind"]
        ]
    # decoupled is templated for tensorrt_llm and the BLS only
    for name in ("tensorrt_llm", "tensorrt_llm_bls"):
        assert configs[name].model_transaction_policy.decoupled is True
    for name in ("preprocessing", "postprocessing"):
        assert model_template(name)["decoupled"] is None
        assert not configs[name].HasField("model_transaction_policy")


def test_batching_matches_upstream():
    configs = render(names=upstream_names(), serving=LLMServing(triton_max_batch_size=32, max_queue_size=7)).configs
    for name in ("preprocessing", "tensorrt_llm"):
        db = configs[name].dynamic_batching
        assert list(db.preferred_batch_size) == [32]
        assert db.default_queue_policy.max_queue_size == 7
    assert configs["postprocessing"].HasField("dynamic_batching")  # `dynamic_batching {}` upstream
    assert not configs["tensorrt_llm_bls"].HasField("dynamic_batching")
    assert all(c.max_batch_size == 32 for c in configs.values())


def test_ensemble_wiring_matches_upstream():
    config = render(names=upstream_names()).configs["ensemble"]
    steps = model_template("ensemble")["steps"]
    assert [s.model_name for s in config.ensemble_scheduling.step] == [s["model"] for s in steps]
    for rendered, upstream in zip(config.ensemble_scheduling.step, steps, strict=True):
        assert rendered.model_version == -1
        assert dict(rendered.input_map) == upstream["input_map"]
        assert dict(rendered.output_map) == upstream["output_map"]


def test_ensemble_wiring_follows_the_set_names():
    names = LLMNames.prefixed("chat", ensemble="chat_llm")
    ms = render(names=names)
    config = ms.configs["chat_llm"]
    assert [s.model_name for s in config.ensemble_scheduling.step] == [
        "chat_preprocessing",
        "chat_tensorrt_llm",
        "chat_postprocessing",
    ]
    assert ms.configs["chat_bls"].parameters["tensorrt_llm_model_name"].string_value == "chat_tensorrt_llm"


def test_python_models_carry_exactly_upstreams_parameter_keys():
    configs = render(names=upstream_names()).configs
    for name in ("preprocessing", "postprocessing", "tensorrt_llm_bls"):
        assert set(configs[name].parameters) == set(parameter_keys(name)), name


def test_tensorrt_llm_carries_upstreams_parameter_keys_when_every_value_is_set():
    params = TensorRTLLMParams(
        encoder_model_path="/engines/encoder",
        max_tokens_in_paged_kv_cache=4096,
        max_attention_window_size=[4096, 1024],
        sink_token_length=4,
        cross_kv_cache_fraction=0.5,
        gpu_device_ids=[[0, 1]],
        participant_ids=[[1, 2]],
        lora_prefetch_dir="/loras",
        decoding_mode="lookahead",
        lookahead_window_size=4,
        lookahead_ngram_size=3,
        lookahead_verification_set_size=2,
        medusa_choices=None,
        eagle_choices=None,
        tokenizer_dir="/tokenizer",
        guided_decoding_backend="xgrammar",
        xgrammar_tokenizer_info_path="/xgrammar.json",
    )
    # medusa/eagle choices are only read in their decoding modes: render them in a second set
    with_choices = TensorRTLLMParams(decoding_mode="medusa", medusa_choices=[[0], [0, 1]], eagle_choices=None)
    keys = set(render(params=params).configs["tensorrt_llm"].parameters)
    keys |= set(render(params=with_choices).configs["tensorrt_llm"].parameters)
    keys |= set(
        render(params=TensorRTLLMParams(decoding_mode="eagle", eagle_choices=[[0]])).configs["tensorrt_llm"].parameters
    )
    assert keys == set(parameter_keys("tensorrt_llm"))


def test_tensorrt_llm_omits_exactly_the_unset_keys_the_backend_has_a_default_for():
    parameters = render().configs["tensorrt_llm"].parameters
    defaults = TensorRTLLMParams()
    unset = {k for k in parameter_keys("tensorrt_llm") if getattr(defaults, k.lower()) is None} - {"gpt_model_path"}
    required = set(required_parameter_keys("tensorrt_llm"))
    assert set(parameters) == set(parameter_keys("tensorrt_llm")) - (unset - required)
    # the unset keys read without a default are there, empty: the backend reads "" as "not given"
    for key in unset & required:
        assert parameters[key].string_value == "", key
    # what is left unset has no upstream default, except cross_kv_cache_fraction (encoder-decoder only)
    upstream = upstream_defaults("tensorrt_llm")
    assert {k for k in unset if upstream[k] is not None} == {"cross_kv_cache_fraction"}


def test_required_tensorrt_llm_keys_are_recorded_with_their_upstream_source():
    required = required_parameter_keys("tensorrt_llm")
    # guided decoding's three keys are read unconditionally (getGuidedDecodingConfigFromParams), gpt_model_type by
    # getBatchingTypeFromParams; each is also a template key, so a typed field renders it
    assert {"tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path", "gpt_model_type"} <= set(
        required
    )
    assert set(required) <= set(parameter_keys("tensorrt_llm"))
    source = templates()["upstream"]["required_parameters_source"]
    paths = {f["path"].rsplit("/", 1)[-1] for f in source["files"]}
    assert paths == {"model_instance_state.cc", "model_state.cc"}
    assert all(re.fullmatch(r"[0-9a-f]{40}", f["commit"]) for f in source["files"])


def _guided(**kwargs):
    return TensorRTLLMParams(guided_decoding_backend="xgrammar", xgrammar_tokenizer_info_path="/x.json", **kwargs)


@pytest.mark.parametrize(
    ("params", "names", "bls"),
    [
        (TensorRTLLMParams(), LLMNames(), BLSParams()),
        (TensorRTLLMParams(), LLMNames(), None),
        (TensorRTLLMParams(lora_prefetch_dir="/loras", lora_cache_max_adapter_size=16), LLMNames(), None),
        (TensorRTLLMParams(lora_prefetch_dir="/loras"), LLMNames.prefixed("chat", ensemble="chat_llm"), BLSParams()),
        (TensorRTLLMParams(batching_strategy="V1", decoupled_mode=True), LLMNames.prefixed("qa"), None),
        (TensorRTLLMParams(triton_backend="python"), LLMNames(), BLSParams()),
        (TensorRTLLMParams(tokenizer_dir="/tok"), LLMNames.prefixed("tok"), None),
        (_guided(), LLMNames(), BLSParams()),
    ],
)
def test_every_tensorrt_llm_config_carries_every_key_the_backend_requires(params, names, bls):
    configs = render(params=params, names=names, bls=bls).configs
    parameters = configs[names.tensorrt_llm].parameters
    missing = [k for k in required_parameter_keys("tensorrt_llm") if k not in parameters]
    assert missing == []
    # set values are rendered as given; unset ones as "" (guided decoding off, tokenizer_dir not logged)
    for key in required_parameter_keys("tensorrt_llm"):
        value = params.values()[key]
        assert parameters[key].string_value == ("" if value is None else parameter_string(key, value)), key
    assert not any("${" in p.string_value for p in parameters.values())


def test_documented_extra_parameter_is_rendered_only_when_set():
    assert "recv_poll_period_ms" not in render().configs["tensorrt_llm"].parameters
    configs = render(params=TensorRTLLMParams(recv_poll_period_ms=5)).configs
    assert configs["tensorrt_llm"].parameters["recv_poll_period_ms"].string_value == "5"


def test_no_placeholder_anywhere_in_the_rendered_files():
    ms = render(names=upstream_names(), params=TensorRTLLMParams(decoupled_mode=True))
    for path, content in ms.files.items():
        text = content.decode() if isinstance(content, bytes) else Path(content).read_text()
        assert "${" not in text, path


def test_rendered_repository_passes_the_validator(tmp_path):
    ms = render(names=upstream_names(), params=TensorRTLLMParams(decoupled_mode=True))
    materialize(ms.files, tmp_path)
    assert check_repository(tmp_path) == []
    assert (tmp_path / "preprocessing" / "1" / "tokenizer" / "tokenizer.json").is_file()
    assert (tmp_path / "ensemble" / "1").is_dir()
    assert (tmp_path / "tensorrt_llm" / "1").is_dir()


def test_templated_data_types_follow_the_typed_settings(tmp_path):
    params = TensorRTLLMParams(logits_datatype="TYPE_FP16", prompt_embedding_table_data_type="TYPE_BF16")
    ms = render(params=params)
    pb = model_config_pb2()

    def dtype(model, side, name):
        tensors = getattr(ms.configs[model], side)
        return pb.DataType.Name(next(t.data_type for t in tensors if t.name == name))

    for model in ("tensorrt_llm", "llm", "tensorrt_llm_bls"):
        assert dtype(model, "output", "generation_logits") == "TYPE_FP16"
    assert dtype("tensorrt_llm", "input", "draft_logits") == "TYPE_FP16"
    for model in ("tensorrt_llm", "llm", "tensorrt_llm_bls"):
        assert dtype(model, "input", "prompt_embedding_table") == "TYPE_BF16"
    materialize(ms.files, tmp_path)
    assert check_repository(tmp_path) == []


# ------------------------------------------------------------------------------------------------ defaults


def test_tensorrt_llm_defaults_are_upstreams():
    params = TensorRTLLMParams()
    checked = 0
    for key, default in upstream_defaults("tensorrt_llm").items():
        if default is None or key == "cross_kv_cache_fraction":  # refused for decoder-only models: left unset
            continue
        if key == "recv_poll_period_ms":  # not in the template: unset (not rendered) leaves the backend's 0
            assert params.recv_poll_period_ms is None
            continue
        assert getattr(params, key.lower()) == default, key
        checked += 1
    assert checked >= 25
    rendered = render().configs["tensorrt_llm"].parameters
    assert rendered["kv_cache_free_gpu_mem_fraction"].string_value == "0.9"
    assert rendered["gpu_weights_percent"].string_value == "1.0"
    assert rendered["lora_cache_gpu_memory_fraction"].string_value == "0.05"
    assert rendered["enable_kv_cache_reuse"].string_value == "true"
    assert rendered["gpt_model_type"].string_value == "inflight_fused_batching"
    assert rendered["gpt_model_path"].string_value == "/engines/llama"
    assert rendered["FORCE_CPU_ONLY_INPUT_TENSORS"].string_value == "no"
    assert (
        rendered["executor_worker_path"].string_value == "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"
    )


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("preprocessing", PreprocessingParams()),
        ("postprocessing", PostprocessingParams()),
        ("tensorrt_llm_bls", BLSParams()),
    ],
)
def test_python_model_defaults_are_upstreams(model, params):
    values = params.values()
    for key, default in upstream_defaults(model).items():
        if key == "tensorrt_llm_model_name":  # None = the set's tensorrt_llm model, 'tensorrt_llm' by default
            assert render().configs["tensorrt_llm_bls"].parameters[key].string_value == default
            continue
        if default is not None:
            assert values[key] == default, key


def test_python_models_render_unset_values_as_empty_strings():
    configs = render().configs
    assert configs["preprocessing"].parameters["multimodal_model_path"].string_value == ""
    assert configs["preprocessing"].parameters["add_special_tokens"].string_value == "true"
    assert configs["preprocessing"].parameters["tokenizer_dir"].string_value == "tokenizer"
    assert configs["tensorrt_llm_bls"].parameters["tensorrt_llm_draft_model_name"].string_value == ""


def test_multimodal_preprocessing_reads_the_engine_folder():
    pre = PreprocessingParams(multimodal_model_path="/engines/vision")
    params = render(preprocessing=pre).configs["preprocessing"].parameters
    assert params["gpt_model_path"].string_value == "/engines/llama"


def test_tokenizer_dir_in_the_container_ships_no_files():
    ms = render(
        preprocessing=PreprocessingParams(tokenizer_dir="/models/tok"),
        postprocessing=PostprocessingParams(tokenizer_dir="/models/tok"),
        tokenizer_files=None,
    )
    assert not any("/tokenizer/" in p for p in ms.files)
    assert ms.configs["postprocessing"].parameters["tokenizer_dir"].string_value == "/models/tok"


# ------------------------------------------------------------------------------------------------ parameter strings


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("enable_kv_cache_reuse", False, "false"),
        ("gpu_device_ids", [[0, 1], [2, 3]], "0,1;2,3"),
        ("max_attention_window_size", [4096, 1024], "4096,1024"),
        ("medusa_choices", [[0], [0, 1]], "{0}, {0, 1}"),
        ("kv_cache_free_gpu_mem_fraction", 0.85, "0.85"),
        ("gpu_weights_percent", 1.0, "1.0"),
        ("lora_cache_host_memory_bytes", 1 << 30, "1073741824"),
    ],
)
def test_parameter_strings(key, value, text):
    assert parameter_string(key, value) == text


def test_upstream_variable_names_are_accepted_as_aliases():
    params = TensorRTLLMParams.model_validate(
        {"engine_dir": "/e", "batching_strategy": "V1", "FORCE_CPU_ONLY_INPUT_TENSORS": "yes", "gpu_device_ids": [0, 1]}
    )
    assert params.gpt_model_path == "/e"
    assert params.gpt_model_type == "V1"
    assert params.force_cpu_only_input_tensors == "yes"
    assert params.gpu_device_ids == [[0, 1]]


# ------------------------------------------------------------------------------------------------ bad combinations


def messages(err: PydanticValidationError) -> dict[str, str]:
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in err.errors()}


def test_lookahead_needs_its_three_sizes_and_every_problem_is_reported():
    with pytest.raises(PydanticValidationError) as info:
        TensorRTLLMParams(decoding_mode="lookahead", lookahead_ngram_size=3, max_beam_width=0)
    found = messages(info.value)
    assert "greater than or equal to 1" in found["max_beam_width"]
    assert found["lookahead_window_size"] == "must be set when decoding_mode is 'lookahead'"
    assert found["lookahead_verification_set_size"] == "must be set when decoding_mode is 'lookahead'"


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"lookahead_window_size": 4}, "lookahead_window_size", "only read when decoding_mode is 'lookahead'"),
        ({"decoding_mode": "beam_search"}, "decoding_mode", "'beam_search' needs max_beam_width > 1"),
        (
            {"medusa_choices": [[0]], "decoding_mode": "top_k"},
            "medusa_choices",
            "only read when decoding_mode is 'medusa'",
        ),
        ({"guided_decoding_backend": "xgrammar"}, "xgrammar_tokenizer_info_path", "silently disables guided decoding"),
        (
            {"lora_cache_optimal_adapter_size": 128},
            "lora_cache_optimal_adapter_size",
            "128 is larger than lora_cache_max_adapter_size 64",
        ),
        ({"speculative_decoding_fast_logits": True}, "speculative_decoding_fast_logits", "participant_ids"),
        (
            {"gpu_device_ids": [[0], [1]], "participant_ids": [[1]]},
            "participant_ids",
            "lists 1 model instances but gpu_device_ids lists 2",
        ),
        ({"batching_strategy": "V1", "enable_chunked_context": True}, "enable_chunked_context", "in-flight batching"),
        ({"kv_cache_free_gpu_mem_fraction": 1.5}, "kv_cache_free_gpu_mem_fraction", "less than or equal to 1"),
        ({"batching_strategy": "static"}, "gpt_model_type", "inflight_fused_batching"),
    ],
)
def test_bad_tensorrt_llm_params(data, field, text):
    with pytest.raises(PydanticValidationError) as info:
        TensorRTLLMParams.model_validate(data)
    found = messages(info.value)
    key = next(k for k in found if k.split(".")[0] in (field, "batching_strategy"))
    assert text in found[key]


def test_parse_params_reports_field_paths_as_spec_errors():
    with pytest.raises(SpecError) as info:
        parse_params({"decoding_mode": "beam_search", "max_beam_width": "x", "bogus": 1}, TensorRTLLMParams)
    text = str(info.value)
    assert "max_beam_width: 'x': input should be a valid integer" in text
    assert "bogus: unknown field" in text


def test_engine_dir_conflict_and_missing_tokenizer_are_reported_together():
    with pytest.raises(SpecError) as info:
        gpu_llm_model_set(
            engine_dir_in_container="/engines/a",
            params=TensorRTLLMParams(engine_dir="/engines/b"),
        )
    where = [p.where for p in info.value.problems]
    assert where == ["tensorrt_llm.gpt_model_path", "preprocessing.tokenizer_dir", "postprocessing.tokenizer_dir"]
    assert "'/engines/b' differs from engine_dir_in_container '/engines/a'" in str(info.value)


def test_runtime_params_are_checked_against_the_engine():
    engine = EngineSettings(use_paged_context_fmha=False, kv_cache_reuse=False, tp_size=2)
    params = TensorRTLLMParams(max_beam_width=2, decoding_mode="beam_search", gpu_device_ids=[[0]])
    problems = {p.where: p.message for p in check_against_engine(params, engine)}
    assert problems["tensorrt_llm.max_beam_width"] == "2 exceeds the engine's max_beam_width 1"
    assert "use_paged_context_fmha" in problems["tensorrt_llm.enable_kv_cache_reuse"]
    assert problems["tensorrt_llm.gpu_device_ids"] == (
        "instance 0 lists 1 GPU(s) but the engine needs tp_size 2 × pp_size 1 = 2"
    )
    with pytest.raises(SpecError, match="max_beam_width"):
        render(params=params, engine=engine)
    assert check_against_engine(TensorRTLLMParams(), EngineSettings()) == []


def test_missing_python_sources_are_noted_not_faked():
    ms = gpu_llm_model_set(engine_dir_in_container="/e", tokenizer_files=TOKENIZER, python_sources={}, bls=BLSParams())
    noted = " ".join(ms.notes)
    for model, source in (
        ("preprocessing", "llm_preprocessing"),
        ("postprocessing", "llm_postprocessing"),
        ("tensorrt_llm_bls", "llm_bls"),
    ):
        # shipped once python_backends has it; until then the gap is reported, never papered over
        assert (f"{model}/1/model.py" in ms.files) != (f"python_backends/{source}" in noted), model


# ------------------------------------------------------------------------------------------------ shared contract


def test_contract_functions_match_the_data_file():
    assert [t.name for t in tensorrt_llm_signature().inputs] == [
        t["name"] for t in model_template("tensorrt_llm")["inputs"]
    ]
    assert [t.name for t in preprocessing_signature().outputs] == [
        t["name"] for t in model_template("preprocessing")["outputs"]
    ]
    assert [t.name for t in postprocessing_signature().inputs] == ["TOKENS_BATCH", "SEQUENCE_LENGTH"]
    sig = tensorrt_llm_signature(logits_datatype="TYPE_BF16")
    assert next(t for t in sig.outputs if t.name == "context_logits").data_type == "TYPE_BF16"
    input_lengths = next(t for t in sig.inputs if t.name == "input_lengths")
    assert (input_lengths.dims, input_lengths.reshape, input_lengths.optional) == ((1,), (), False)


def test_wiring_exposes_the_clients_contract():
    wiring = llm_ensemble_wiring()
    names = {t.name for t in wiring.signature.inputs}
    assert {"text_input", "max_tokens", "stream", "temperature", "top_k", "top_p", "end_id", "pad_id"} <= names
    assert {"stop_words", "bad_words", "lora_task_id"} <= names
    assert wiring.signature.outputs[0].name == "text_output"
    assert [s.role for s in wiring.steps] == ["preprocessing", "tensorrt_llm", "postprocessing"]


def test_the_llm_ensemble_is_built_with_the_dag_so_bad_additions_fail_in_tritons_words() -> None:
    from tritonforge.builders.llm_gpu import ContractAdditions
    from tritonforge.errors import ValidationError

    wrong = ContractAdditions(preprocessing_input_map={"NO_SUCH_INPUT": "text_input"})
    with pytest.raises(ValidationError, match="mapping to non-existing input NO_SUCH_INPUT in model preprocessing"):
        gpu_llm_model_set(engine_dir_in_container="/e", tokenizer_files=TOKENIZER, python_sources={}, additions=wrong)
