"""Spec → ModelConfig rendering: protobuf messages, the same graph on both targets, no placeholders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tritonforge.builders.embedding import embedding_model_set
from tritonforge.config_io import model_config_pb2, parse_config_text
from tritonforge.spec import load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class FakeArtifact:
    """Stands in for an exported encoder: rendering needs only its signature, not its weights."""

    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    output_name: str = "EMBEDDING"
    dim: int = 384
    max_seq_length: int = 256
    onnx_path: Path = Path("model.onnx")
    tokenizer_files: dict = field(default_factory=dict)


def _configs(target: str, spec_path: Path = EXAMPLES / "embed.yaml") -> dict:
    spec = load_spec(spec_path)
    plan = embedding_model_set("minilm", spec.models["minilm"], target, FakeArtifact()).files  # type: ignore[arg-type]
    return {k.split("/")[0]: parse_config_text(v.decode()) for k, v in plan.items() if k.endswith("config.pbtxt")}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_same_graph_on_both_targets(target: str) -> None:
    cfgs = _configs(target)
    assert set(cfgs) == {"minilm_tokenizer", "minilm_encoder", "embed"}
    ens = cfgs["embed"]
    assert ens.platform == "ensemble" and not ens.backend
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["minilm_tokenizer", "minilm_encoder"]
    assert all(s.model_version == -1 for s in ens.ensemble_scheduling.step)
    assert [i.name for i in ens.input] == ["TEXT"]
    assert [o.name for o in ens.output] == ["EMBEDDING", "NUM_TOKENS", "TRUNCATED"]
    assert list(ens.output[0].dims) == [384]
    enc = cfgs["minilm_encoder"]
    assert [i.name for i in enc.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert enc.max_batch_size == 64
    assert list(enc.dynamic_batching.preferred_batch_size) == [16, 32, 64]
    assert enc.dynamic_batching.default_queue_policy.max_queue_size == 256


def test_cpu_target_uses_the_python_runner_with_ragged_batching() -> None:
    pb = model_config_pb2()
    enc = _configs("cpu")["minilm_encoder"]
    assert enc.backend == "python"
    assert all(i.allow_ragged_batch for i in enc.input)
    assert enc.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert not enc.HasField("optimization")  # accelerators are onnxruntime-backend settings


def test_gpu_target_uses_onnxruntime_with_accelerators() -> None:
    pb = model_config_pb2()
    cfgs = _configs("gpu")
    enc = cfgs["minilm_encoder"]
    assert enc.backend == "onnxruntime"
    assert not any(i.allow_ragged_batch for i in enc.input)
    assert enc.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    acc = enc.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    # the tokenizer stays on the CPU on every target
    assert cfgs["minilm_tokenizer"].instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU


def test_every_spec_setting_reaches_the_config() -> None:
    pb = model_config_pb2()
    spec = parse_spec(
        {
            "name": "full",
            "target": "gpu",
            "models": {
                "m": {
                    "kind": "embedding",
                    "checkpoint": "x",
                    "max_batch_size": 32,
                    "response_cache": True,
                    "version_policy": {"specific": [1, 3]},
                    "dynamic_batching": {
                        "preferred_batch_sizes": [8],
                        "max_queue_delay_microseconds": 100,
                        "priority_levels": 2,
                        "default_priority_level": 1,
                        "default_queue_policy": {
                            "timeout_action": "delay",
                            "default_timeout_microseconds": 5,
                            "allow_timeout_override": True,
                            "max_queue_size": 9,
                        },
                        "priority_queue_policy": {2: {"max_queue_size": 3}},
                    },
                    "instance_groups": [
                        {
                            "count": 2,
                            "kind": "gpu",
                            "gpus": [0, 1],
                            "rate_limiter": {"resources": [{"name": "R", "count": 2, "global": True}], "priority": 1},
                        }
                    ],
                    "warmup": [
                        {"name": "w", "batch_size": 2, "inputs": {"input_ids": {"data_type": "INT64", "dims": [8]}}}
                    ],
                    "parameters": {"intra_op_thread_count": "2"},
                    "optimization": {"graph_level": 1, "cuda_graphs": True},
                }
            },
        }
    )
    plan = embedding_model_set("m", spec.models["m"], "gpu", FakeArtifact()).files  # type: ignore[arg-type]
    enc = parse_config_text(plan["m_encoder/config.pbtxt"].decode())
    assert list(enc.version_policy.specific.versions) == [1, 3]
    assert enc.response_cache.enable
    db = enc.dynamic_batching
    assert db.priority_levels == 2 and db.default_priority_level == 1
    assert db.default_queue_policy.timeout_action == pb.ModelQueuePolicy.DELAY
    assert db.default_queue_policy.allow_timeout_override and db.default_queue_policy.max_queue_size == 9
    assert db.priority_queue_policy[2].max_queue_size == 3
    group = enc.instance_group[0]
    assert group.count == 2 and list(group.gpus) == [0, 1]
    assert group.rate_limiter.resources[0].name == "R" and getattr(group.rate_limiter.resources[0], "global")
    assert group.rate_limiter.priority == 1
    assert enc.model_warmup[0].inputs["input_ids"].zero_data
    assert enc.parameters["intra_op_thread_count"].string_value == "2"
    assert enc.optimization.graph.level == 1 and enc.optimization.cuda.graphs


def test_rendered_text_has_no_placeholders_and_round_trips() -> None:
    spec = load_spec(EXAMPLES / "embed.yaml")
    for target in ("cpu", "gpu"):
        plan = embedding_model_set("minilm", spec.models["minilm"], target, FakeArtifact()).files  # type: ignore[arg-type]
        for path, content in plan.items():
            if path.endswith(".pbtxt"):
                text = content.decode()
                assert "${" not in text
                from tritonforge.config_io import render_config

                assert render_config(parse_config_text(text)) == text
