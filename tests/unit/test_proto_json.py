"""tritonforge/triton/proto_json.py: gRPC's answers as Triton's HTTP JSON (defaults written, 64-bit integers as
numbers), checked here on the messages themselves; tests/integration/test_client.py compares both protocols."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2, service_pb2

from tritonforge.triton.proto_json import as_http_json


def test_int64_fields_are_numbers_and_defaults_are_written() -> None:
    config = model_config_pb2.ModelConfig(name="m", max_batch_size=8)
    config.input.add(name="X", data_type=model_config_pb2.TYPE_FP32, dims=[-1, 384])
    config.parameters["k"].string_value = "v"
    config.dynamic_batching.max_queue_delay_microseconds = 100  # uint64
    out = as_http_json(config)
    assert out["input"][0]["dims"] == [-1, 384] and out["input"][0]["data_type"] == "TYPE_FP32"
    assert out["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert out["parameters"] == {"k": {"string_value": "v"}}
    assert out["output"] == [] and out["instance_group"] == []  # repeated fields at their default: written
    assert out["max_batch_size"] == 8 and out["backend"] == ""  # a default written, as HTTP's JSON has it


def test_zero_counters_of_the_statistics_are_there() -> None:
    stats = service_pb2.ModelStatisticsResponse()
    entry = stats.model_stats.add(name="m", version="1", execution_count=3)
    entry.inference_stats.success.count = 3
    entry.inference_stats.fail.SetInParent()  # Triton sets every duration, zero or not
    out = as_http_json(stats)["model_stats"][0]
    assert out["execution_count"] == 3 and out["inference_count"] == 0  # uint64: numbers, the zero written
    assert out["inference_stats"]["success"] == {"count": 3, "ns": 0}
    assert out["inference_stats"]["fail"] == {"count": 0, "ns": 0}
