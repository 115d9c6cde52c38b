"""The deployment spec: typed, immutable, every problem reported with its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError as PydanticValidationError

from tritonforge.errors import SpecError
from tritonforge.spec import DeploySettings, format_errors, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _base() -> dict:
    return yaml.safe_load((EXAMPLES / "embed.yaml").read_text())


def _problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return [str(p) for p in info.value.problems]


def test_example_parses_and_is_immutable() -> None:
    spec = load_spec(EXAMPLES / "embed.yaml")
    model = spec.models["minilm"]
    assert model.max_batch_size == 64
    assert model.dynamic_batching is not None
    assert model.dynamic_batching.preferred_batch_sizes == [16, 32, 64]
    assert spec.source_dir == EXAMPLES.resolve()
    with pytest.raises(PydanticValidationError):
        model.max_batch_size = 8  # type: ignore[misc]


def test_preferred_batch_size_over_max_names_the_field() -> None:
    data = _base()
    data["models"]["minilm"]["dynamic_batching"]["preferred_batch_sizes"] = [16, 72]
    assert _problems(data) == [
        "models.minilm.dynamic_batching.preferred_batch_sizes[1]: dynamic batching preferred size must be <= max batch size (72 > max_batch_size 64)"
    ]


def test_every_problem_is_reported_at_once() -> None:
    data = _base()
    m = data["models"]["minilm"]
    m["instance_groups"][0]["kind"] = "tpu"
    m["tokenizer"]["max_batch_size"] = -1
    m["bogus"] = True
    m["dynamic_batching"]["preferred_batch_sizes"] = [16, 72]  # a cross-field rule beside field errors
    data["models"]["second"] = {
        "kind": "embedding",
        "checkpoint": "x",
        "ensemble": "embed2",
        "max_batch_size": 8,
        "dynamic_batching": {"preferred_batch_sizes": [16]},
    }
    problems = _problems(data)
    assert (
        "models.minilm.instance_groups[0].kind: 'tpu' is not allowed; expected 'auto', 'cpu', 'gpu' or 'model'"
        in problems
    )
    assert any(p.startswith("models.minilm.tokenizer.max_batch_size: -1") for p in problems)
    assert "models.minilm.bogus: unknown field" in problems
    assert "models.second.dynamic_batching.preferred_batch_sizes[0]: dynamic batching preferred size must be <= max batch size (16 > max_batch_size 8)" in problems
    assert "models.minilm.dynamic_batching.preferred_batch_sizes[1]: dynamic batching preferred size must be <= max batch size (72 > max_batch_size 64)" in problems
    assert len(problems) == 5


def test_an_unknown_field_suggests_the_near_miss_allowed_at_its_place() -> None:
    data = _base()
    m = data["models"]["minilm"]
    m["poolng"] = "mean"
    m["bogus"] = True  # nothing close: the message stays as it was
    m["tokenizer"]["max_batchsize"] = 8  # the tokenizer's own fields, not the model's
    m["instance_groups"][0]["rate_limiter"] = {"resources": [{"name": "R", "globl": True}]}  # the YAML alias
    data["deploy"] = {"replica": 2}
    data["targt"] = "cpu"
    assert sorted(_problems(data)) == [
        "deploy.replica: unknown field (did you mean 'replicas'?)",
        "models.minilm.bogus: unknown field",
        "models.minilm.instance_groups[0].rate_limiter.resources[0].globl: unknown field (did you mean 'global'?)",
        "models.minilm.poolng: unknown field (did you mean 'pooling'?)",
        "models.minilm.tokenizer.max_batchsize: unknown field (did you mean 'max_batch_size'?)",
        "targt: unknown field (did you mean 'target'?)",
    ]
    data = _base()
    data["source_dirr"] = "."  # source_dir is set by load_spec, not a spec field to suggest
    assert _problems(data) == ["source_dirr: unknown field"]


def test_format_errors_of_another_spec_class_suggests_from_its_fields() -> None:
    """Callers that validate a section by itself (deploy/k8s.py's DeploySettings, TensorRT-LLM parameters) pass
    their class."""
    with pytest.raises(PydanticValidationError) as info:
        DeploySettings.model_validate({"replica": 2, "autoscaling": {"max_replica": 3}})
    assert sorted(str(p) for p in format_errors(info.value, DeploySettings)) == [
        "autoscaling.max_replica: unknown field (did you mean 'max_replicas'?)",
        "replica: unknown field (did you mean 'replicas'?)",
    ]


@pytest.mark.parametrize(
    ("batching", "expected"),
    [
        (
            {"priority_levels": 2, "default_priority_level": 3},
            "models.minilm.dynamic_batching.default_priority_level: default priority level must be in range [1, 2]",
        ),
        (
            {"priority_levels": 2, "default_priority_level": 1, "preserve_ordering": True},
            "models.minilm.dynamic_batching.preserve_ordering: Only one priority level is allowed when 'preserve_ordering' is true",
        ),
        (
            {
                "preserve_ordering": True,
                "default_queue_policy": {"timeout_action": "delay", "default_timeout_microseconds": 10},
            },
            "models.minilm.dynamic_batching.preserve_ordering: Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true",
        ),
        (
            {"default_priority_level": 1},
            "models.minilm.dynamic_batching.priority_levels: must be set (> 0) to use default_priority_level or priority_queue_policy",
        ),
    ],
)
def test_triton_batching_rules_are_spec_errors(batching: dict, expected: str) -> None:
    data = _base()
    data["models"]["minilm"]["dynamic_batching"] = batching
    assert _problems(data) == [expected]


def test_gpus_on_cpu_instances() -> None:
    data = _base()
    data["models"]["minilm"]["instance_groups"] = [{"kind": "cpu", "gpus": [0]}]
    assert _problems(data) == [
        "models.minilm.instance_groups[0].gpus: kind 'cpu' instances cannot list GPUs; use kind 'gpu' or 'auto'"
    ]


def test_two_models_may_not_render_the_same_triton_name() -> None:
    data = _base()
    data["models"]["twin"] = {"kind": "embedding", "checkpoint": "x"}  # also wants the `embed` ensemble name
    assert _problems(data) == ["models.twin: Triton model name 'embed' is also used by models.minilm"]


def test_placeholders_are_refused() -> None:
    data = _base()
    data["models"]["minilm"]["parameters"] = {"engine_dir": "${engine_dir}"}
    assert _problems(data) == [
        "models.minilm.parameters.engine_dir: placeholders like ${...} are not allowed; give the value"
    ]


def test_unreadable_files_and_non_mappings(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML") as caught:
        load_spec(bad)
    # YAML's marks name the file, with the line shown, not PyYAML's "<unicode string>"
    assert f'in "{bad}", line 1, column 9:\n    models: [unclosed' in str(caught.value)
    assert "<unicode string>" not in str(caught.value)
    with pytest.raises(SpecError, match="a spec is a mapping"):
        parse_spec(["not", "a", "mapping"])
    empty = {"name": "x", "models": {}}
    assert _problems(empty) == ["models: name at least one model"]


def test_with_target_returns_a_new_spec() -> None:
    spec = load_spec(EXAMPLES / "embed.yaml")
    gpu = spec.with_target("gpu")
    assert gpu.target == "gpu" and spec.target == "cpu"
    assert spec.with_target(None) is spec


def test_cpu_quantization_bf16_for_embedding_and_reranker_models() -> None:
    data = _base()
    data["models"]["minilm"]["cpu_quantization"] = "bf16"
    assert parse_spec(data).models["minilm"].cpu_quantization == "bf16"
    data["models"]["minilm"]["cpu_quantization"] = "fp8"
    (problem,) = _problems(data)
    assert problem.startswith("models.minilm.cpu_quantization:") and "'none', 'int8' or 'bf16'" in problem, problem
    data["models"]["minilm"]["cpu_quantization"] = "none"
    data["models"]["rr"] = {"kind": "reranker", "checkpoint": "pypi:x", "cpu_quantization": "bf16"}
    assert parse_spec(data).models["rr"].cpu_quantization == "bf16"
    data["models"]["rr"]["cpu_quantization"] = "fp16"
    (problem,) = _problems(data)
    assert problem.startswith("models.rr.cpu_quantization:") and "'none', 'int8' or 'bf16'" in problem, problem


def test_cpu_llm_weights_bf16_is_accepted_also_with_adapters_and_int8_with_adapters_is_not() -> None:
    def llm(weights: str, adapters: bool = False) -> dict:
        model = {"kind": "llm", "checkpoint": "random:decoder", "cpu": {"weights": weights}}
        if adapters:
            model["adapters"] = {"support": {"path": "random:support"}}
        return {"name": "t", "target": "cpu", "models": {"chat": model}}

    assert parse_spec(llm("bf16")).models["chat"].cpu.weights == "bf16"
    assert parse_spec(llm("bf16", adapters=True)).models["chat"].cpu.weights == "bf16"
    (problem,) = _problems(llm("int8", adapters=True))
    assert problem.startswith("models.chat.cpu.weights:") and "use fp32 or bf16 with adapters" in problem, problem
    (problem,) = _problems(llm("fp16"))
    assert problem.startswith("models.chat.cpu.weights:") and "'fp32', 'bf16' or 'int8'" in problem, problem


def test_deploy_replicas_outside_the_autoscalers_range_are_refused() -> None:
    """The HorizontalPodAutoscaler moves replicas into min_replicas-max_replicas at once: 8 would run as 4."""
    data = _base()
    data["deploy"] = {"replicas": 8}
    assert _problems(data) == [
        "deploy.replicas: 8 is outside autoscaling's 1-4 replicas, which the HorizontalPodAutoscaler keeps: change "
        "autoscaling.min_replicas/max_replicas, or set autoscaling.enabled: false"
    ]
    data["deploy"] = {"replicas": 8, "autoscaling": {"enabled": False}}
    assert parse_spec(data).deploy.replicas == 8
    data["deploy"] = {"replicas": 3, "autoscaling": {"max_replicas": 6}}
    assert parse_spec(data).deploy.replicas == 3


def test_a_shm_size_at_or_above_the_memory_limit_is_refused() -> None:
    """A memory-backed /dev/shm counts against the pod's memory limit: 16Gi of shm in 4Gi of memory was accepted,
    and the pod would be OOM-killed before the volume filled (deploy audit)."""
    from tritonforge.spec_deploy import quantity

    assert (quantity("2Gi"), quantity("500m"), quantity("1.5G"), quantity("3")) == (2**31, 0.5, 1.5e9, 3)
    with pytest.raises(PydanticValidationError) as info:
        DeploySettings.model_validate({"shm_size": "16Gi", "memory": "4Gi"})
    (problem,) = format_errors(info.value, DeploySettings)
    assert str(problem).startswith("shm_size: 16Gi is not below memory 4Gi: /dev/shm is memory-backed")
    with pytest.raises(PydanticValidationError):
        DeploySettings.model_validate({"shm_size": "8Gi"})  # the default memory, 8Gi: not below
    assert DeploySettings.model_validate({"shm_size": "4G", "memory": "4Gi"}).shm_size == "4G"  # 4e9 < 2**32


def test_the_gateways_scaling_is_checked_where_it_is_written() -> None:
    """deploy.gateway: a range the wrong way round, a target outside 10-100% and a misspelt key are each named at
    their field, with what is allowed."""
    def problems(gateway: dict[str, Any]) -> list[str]:
        with pytest.raises(PydanticValidationError) as info:
            DeploySettings.model_validate({"gateway": gateway})
        return [str(p) for p in format_errors(info.value, DeploySettings)]

    assert problems({"min_replicas": 4, "max_replicas": 2}) == ["gateway.min_replicas: 4 is larger than max_replicas 2"]
    (target,) = problems({"target_cpu_percent": 150})
    assert target.startswith("gateway.target_cpu_percent:") and "100" in target
    (typo,) = problems({"max_replica": 4})
    assert "did you mean 'max_replicas'" in typo
    assert not DeploySettings().gateway.autoscaled
    three = DeploySettings.model_validate({"gateway": {"min_replicas": 3}}).gateway  # a fixed count (was refused)
    assert (three.min_replicas, three.most_replicas, three.autoscaled) == (3, 3, False)
    assert DeploySettings.model_validate({"gateway": {"max_replicas": 5}}).gateway.autoscaled
