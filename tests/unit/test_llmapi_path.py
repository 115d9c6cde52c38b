"""The LLM API path (runtime: llmapi, the default) and the image that decides between it and the engine path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tritonforge.build import build
from tritonforge.config_io import read_config
from tritonforge.errors import SpecError
from tritonforge.spec import parse_spec
from tritonforge.trtllm.images import default_image, image_info, newest_engine_image
from tritonforge.trtllm.llmapi import llm_arg_names, llmapi_data
from tritonforge.trtllm.params import required_parameter_keys

IMAGE_2607 = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder

    return make_tiny_decoder(tmp_path_factory.mktemp("decoder") / "decoder")


def spec(decoder: Path, target: str = "gpu", image: str | None = None, **llm: object) -> object:
    data: dict[str, object] = {
        "name": "t",
        "target": target,
        "models": {"chat": {"kind": "llm", "checkpoint": str(decoder), "max_input_len": 64, "max_seq_len": 128, **llm}},
    }
    if image:
        data["image"] = image
    return parse_spec(data)


def test_the_default_gpu_build_is_an_llm_api_repository_that_validates(decoder: Path, tmp_path: Path) -> None:
    report = build(spec(decoder), tmp_path / "r")  # validated against Triton's rules before it is written
    repo = report.repo
    assert sorted(report.models) == ["llm", "preprocessing", "tensorrt_llm"]
    trt = read_config(repo / "tensorrt_llm" / "config.pbtxt")
    assert trt.backend == "python" and trt.model_transaction_policy.decoupled
    upstream = llmapi_data()["model"]
    additions_in, additions_out = ["return_num_input_tokens", "return_num_output_tokens"], ["num_input_tokens",
                                                                                             "num_output_tokens"]
    assert [(i.name, list(i.dims)) for i in trt.input] == [(i["name"], i["dims"]) for i in upstream["inputs"]] + [
        (n, [1]) for n in additions_in]
    assert [o.name for o in trt.output] == [o["name"] for o in upstream["outputs"]] + additions_out
    args = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert args["model"] == "checkpoint" and (repo / "tensorrt_llm" / "1" / "checkpoint" / "config.json").is_file()
    assert args["backend"] == "pytorch"
    assert args["triton_config"] == {"max_batch_size": trt.max_batch_size, "decoupled": True,
                                     "cancellation_check_period_ms": 100}
    names = llm_arg_names(image_info(default_image()).tensorrt_llm)  # type: ignore[union-attr]
    assert names is not None and set(args) - {"triton_config"} <= names[1]
    manifest = json.loads((repo / "tritonforge.json").read_text())
    assert manifest["image"] == default_image()
    assert manifest["parallel"]["tensorrt_llm"]["runtime"] == "llmapi"


def test_the_ensemble_keeps_the_public_contract_of_the_engine_path(decoder: Path, tmp_path: Path) -> None:
    llmapi = build(spec(decoder), tmp_path / "a").repo
    engine = build(spec(decoder, target="cpu", runtime="engine"), tmp_path / "b").repo
    a, b = (read_config(r / "llm" / "config.pbtxt") for r in (llmapi, engine))
    engine_inputs = {i.name: (i.data_type, list(i.dims)) for i in b.input}
    for tensor in a.input:  # every input of the LLM API ensemble is the engine ensemble's, with its type
        assert engine_inputs[tensor.name] == (tensor.data_type, list(tensor.dims)), tensor.name
    assert {"text_input", "max_tokens", "stream", "temperature", "top_k", "top_p", "seed", "stop_words",
            "apply_chat_template"} <= {i.name for i in a.input}
    assert [o.name for o in a.output] == ["text_output", "num_input_tokens", "num_output_tokens"]


def test_adapters_map_to_lora_id_name_and_path(decoder: Path, tmp_path: Path) -> None:
    from tritonforge.builders.tiny_models import make_tiny_lora

    adapter = make_tiny_lora(decoder, tmp_path / "support", seed=1)
    repo = build(spec(decoder, adapters={"support": {"path": str(adapter)}}), tmp_path / "r").repo
    ens = read_config(repo / "llm" / "config.pbtxt")
    trt_step = next(s for s in ens.ensemble_scheduling.step if s.model_name == "tensorrt_llm")
    assert {"lora_id", "lora_name", "lora_path"} <= set(trt_step.input_map)
    assert ens.parameters["lora_adapters"].string_value == "support"
    table = json.loads((repo / "preprocessing" / "1" / "adapters.json").read_text())
    path = table["adapters"]["support"]["path"]
    assert (repo / "tensorrt_llm" / "1" / path / "adapter_config.json").is_file()  # lora_path, relative
    args = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    # the TensorRT-LLM names of the adapted modules: without them the PyTorch backend asserts "Expecting at least one
    # lora target module" and the LLM does not load
    assert args["lora_config"] == {"max_lora_rank": 64, "max_loras": 1, "max_cpu_loras": 1,
                                   "lora_target_modules": ["attn_q", "attn_v", "mlp_4h_to_h"]}
    # the spec's context limits are LLM()'s on the gpu target (they were dropped)
    assert (args["max_input_len"], args["max_seq_len"]) == (64, 128)


def test_unknown_llm_arguments_are_refused_with_the_field_and_the_release(decoder: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        spec(decoder, llmapi={"extra_llm_args": {"enable_chunked_prefill": True, "max_tokenz": 3}})
    text = str(err.value)
    assert "models.chat.llmapi: extra_llm_args.max_tokenz: not an argument of tensorrt_llm.LLM()" in text
    assert "TensorRT-LLM 1.2" in text and "enable_chunked_prefill" not in text
    with pytest.raises(SpecError, match="set by tritonforge; use the typed field"):
        spec(decoder, llmapi={"extra_llm_args": {"tensor_parallel_size": 2}})
    # a cpu spec built with --target gpu is checked for the gpu target too (it built and validated, and wrote
    # the unknown argument into model.yaml, for LLM() to refuse at the server's load)
    cpu = spec(decoder, target="cpu", llmapi={"extra_llm_args": {"max_tokenz": 3}})
    with pytest.raises(SpecError, match=r"models.chat.llmapi: extra_llm_args.max_tokenz: not an argument"):
        cpu.with_target("gpu")
    with pytest.raises(SpecError, match=r"models.chat.llmapi: extra_llm_args.max_tokenz: not an argument"):
        build(cpu, tmp_path / "r", target="gpu")
    assert not (tmp_path / "r").exists()


def test_known_llm_arguments_are_written_to_model_yaml(decoder: Path, tmp_path: Path) -> None:
    s = spec(decoder, llmapi={"tensor_parallel_size": 2, "extra_llm_args": {"enable_chunked_prefill": True}})
    repo = build(s, tmp_path / "r").repo
    args = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert args["enable_chunked_prefill"] is True and args["tensor_parallel_size"] == 2
    assert args["enable_iter_perf_stats"] is True  # the model publishes the LLM's queue from them
    assert json.loads((repo / "tritonforge.json").read_text())["parallel"]["tensorrt_llm"]["tp_size"] == 2


def test_the_engine_path_is_refused_on_an_image_without_the_engine_backend(decoder: Path) -> None:
    with pytest.raises(SpecError, match=r"so whether it ships TensorRT-LLM's tensorrtllm backend is not known: .* no image after 26\.07 is listed"):
        spec(decoder, image="nvcr.io/nvidia/tritonserver:26.10-trtllm-python-py3", runtime="engine")
    with pytest.raises(SpecError, match="has no TensorRT-LLM"):
        spec(decoder, image="nvcr.io/nvidia/tritonserver:26.07-py3")
    spec(decoder, image="nvcr.io/nvidia/tritonserver:26.10-trtllm-python-py3")  # the LLM API path runs anywhere
    assert image_info(newest_engine_image()).engine_backend  # type: ignore[union-attr]


def test_bls_needs_the_engine_path(decoder: Path) -> None:
    with pytest.raises(SpecError, match="bls: tensorrt_llm_bls wraps the engine path's steps: set runtime: engine"):
        spec(decoder, bls=True)


def test_plan_writes_the_engine_repository_and_its_build_script(decoder: Path, tmp_path: Path) -> None:
    report = build(spec(decoder), tmp_path / "r", plan_only=True, image=IMAGE_2607)
    repo = report.repo
    assert "postprocessing" in report.models and "tensorrt_llm" in report.models
    trt = read_config(repo / "tensorrt_llm" / "config.pbtxt")
    assert trt.backend == "tensorrtllm"
    for key in required_parameter_keys("tensorrt_llm"):  # what the C++ backend reads without a default
        assert key in trt.parameters, key
    script = (repo / "build_engines.sh").read_text()
    assert (repo / "build_engines.sh").stat().st_mode & 0o111
    assert 'case "$found" in 1.2.1*)' in script and "/app/examples /app/tensorrt_llm/examples" in script
    assert '"$EXAMPLES/models/core/llama/convert_checkpoint.py"' in script
    assert 'trtllm-build --checkpoint_dir "$WORK/chat/checkpoint" --output_dir "$REPO/tensorrt_llm/1/engine"' in script
    assert report.planned_commands and all(c in script for c in report.planned_commands)
    subprocess.run(["bash", "-n", str(repo / "build_engines.sh")], check=True)
    assert json.loads((repo / "tritonforge.json").read_text())["image"] == IMAGE_2607
    # the engine the script writes into the repository (and its work folder) do not stop the next build, as a
    # file added by hand would: the output marker names the engine folder as the output's own
    (repo / "tensorrt_llm" / "1" / "engine").mkdir(parents=True)
    (repo / "tensorrt_llm" / "1" / "engine" / "rank0.engine").write_bytes(b"")
    (repo / ".engine-build" / "chat").mkdir(parents=True)
    (repo / ".engine-build" / "chat" / "config.json").write_text("{}")
    build(spec(decoder), repo, plan_only=True, image=IMAGE_2607)


def test_plan_is_refused_for_an_image_without_engines(decoder: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="runtime 'engine'"):
        build(spec(decoder), tmp_path / "r", plan_only=True,
              image="nvcr.io/nvidia/tritonserver:26.10-trtllm-python-py3")
    assert not (tmp_path / "r").exists()


def test_adapter_names_with_a_dot_are_refused(decoder: Path) -> None:
    """peft keys an adapter's modules by its name and refuses '.': "v1.2" built and validated, then took the
    whole LLM down at load (KeyError: module name can't contain ".")."""
    with pytest.raises(SpecError, match=r"models.chat.adapters.v1.2: adapter names may use letters, digits, '_', '-'"):
        spec(decoder, target="cpu", adapters={"v1.2": {"path": "anywhere"}})


def test_an_adapter_trained_on_another_base_is_refused_at_build(decoder: Path, tmp_path: Path) -> None:
    """It built and validated, then failed the whole LLM's load ("size mismatch for ...lora_A...") with every
    other adapter. The adapter's LoRA shapes are read against the base checkpoint's weights."""
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora
    from tritonforge.errors import BuildError

    other = make_tiny_decoder(tmp_path / "other", hidden=32)
    good = make_tiny_lora(decoder, tmp_path / "good", seed=1)
    wrong = make_tiny_lora(other, tmp_path / "wrong", seed=1)
    adapters = {"good": {"path": str(good)}, "wrong": {"path": str(wrong)}}
    with pytest.raises(BuildError, match=r"adapters.wrong \(.*\): adapter for another base model: .*lora_A.weight has "
                                         r"shape \[4, \d+\], which does not fit .*\.weight \[\d+, \d+\] of the base") as err:
        build(spec(decoder, target="cpu", adapters=adapters), tmp_path / "r")
    assert "adapters.good" not in str(err.value)
    assert not (tmp_path / "r").exists()


def test_every_prompt_max_input_len_admits_fits_one_iteration(decoder: Path) -> None:
    """Without chunked prefill the PyTorch backend refuses a prompt over max_num_tokens (8192 by default): a model
    admitting longer prompts gets max_num_tokens = max_input_len, and a smaller explicit value is refused."""
    from tritonforge.trtllm.llmapi import LLMAPISettings, model_yaml

    def written(settings: LLMAPISettings, context: tuple[int, int]) -> dict[str, object]:
        return yaml.safe_load(model_yaml(settings, model_path="checkpoint", max_batch_size=8, context=context))

    assert "max_num_tokens" not in written(LLMAPISettings(), (4096, 8192))  # TensorRT-LLM's default covers it
    assert written(LLMAPISettings(), (16000, 16384))["max_num_tokens"] == 16000
    assert written(LLMAPISettings(max_num_tokens=20000), (16000, 16384))["max_num_tokens"] == 20000
    chunked = LLMAPISettings(extra_llm_args={"enable_chunked_prefill": True})
    assert "max_num_tokens" not in written(chunked, (16000, 16384))  # long prompts run in chunks of the default
    with pytest.raises(SpecError, match=r"llmapi.max_num_tokens: 32 is smaller than max_input_len 64: a prompt "
                                        r"longer than max_num_tokens only runs with chunked prefill"):
        spec(decoder, llmapi={"max_num_tokens": 32})
    spec(decoder, llmapi={"max_num_tokens": 32, "extra_llm_args": {"enable_chunked_prefill": True}})


def test_the_llm_api_path_is_refused_on_images_older_than_its_first_release(decoder: Path) -> None:
    """tritonforge's model.py and model.yaml use TensorRT-LLM 1.x's LLM API: an older image (24.04 ships 0.9.0, 25.01
    0.17.0, 25.08 0.21.0) built silently and the model failed when Triton loaded it."""
    from tritonforge.trtllm.images import first_llmapi_image, runtime_problems

    assert first_llmapi_image() == "nvcr.io/nvidia/tritonserver:25.09-trtllm-python-py3"
    for tag, version in (("24.04", "0.9.0"), ("25.01", "0.17.0"), ("25.08", "0.21.0")):
        image = f"nvcr.io/nvidia/tritonserver:{tag}-trtllm-python-py3"
        with pytest.raises(SpecError) as err:
            spec(decoder, image=image)
        text = str(err.value)
        assert "models.chat.runtime: runtime 'llmapi' needs TensorRT-LLM 1.0.0 or later" in text
        assert f"ships TensorRT-LLM {version}: use image {first_llmapi_image()} or later" in text
        assert runtime_problems(image, "engine") == []  # the engine path still serves these images
        spec(decoder, image=image, runtime="engine")
    for tag in ("25.09", "25.11", "26.07"):  # 1.0.0, 1.0.3.2510, 1.2.1
        assert runtime_problems(f"{tag}-trtllm-python-py3", "llmapi") == []
    spec(decoder, target="cpu", image="nvcr.io/nvidia/tritonserver:24.04-trtllm-python-py3")  # cpu: not this image's LLM


def test_every_written_model_yaml_key_is_checked_against_the_images_llm_arguments(
    decoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only extra_llm_args: a key tritonforge writes itself that the image's LLM() lacks is refused at build,
    not at Triton's load."""
    from tritonforge.errors import BuildError
    from tritonforge.trtllm import llmapi

    text = b"model: checkpoint\nenable_iter_perf_stats: true\nkv_cache_config: {free_gpu_memory_fraction: 0.9, x: 1}\n" \
           b"triton_config: {max_batch_size: 8}\n"
    assert llmapi.model_yaml_problems(text, "1.2.1", "img") == [
        "model.yaml key 'kv_cache_config.x' is not a field of kv_cache_config in TensorRT-LLM 1.2 (img); its fields: "
        "dtype, enable_block_reuse, free_gpu_memory_fraction, host_cache_size, max_attention_window, max_tokens, "
        "tokens_per_block"]
    assert llmapi.model_yaml_problems(text, "0.21.0", "img") == []  # no list recorded for that release
    data = llmapi.llmapi_data()
    names = data["llm_args"]["lists"]["main-2026"]["names"]
    monkeypatch.setitem(data["llm_args"]["lists"]["main-2026"], "names",
                        [n for n in names if n != "enable_iter_perf_stats"])
    with pytest.raises(BuildError, match=r"models.chat: model.yaml key 'enable_iter_perf_stats' is not an argument "
                                         r"of tensorrt_llm.LLM\(\) in TensorRT-LLM 1.2"):
        build(spec(decoder), tmp_path / "r")
    assert not (tmp_path / "r").exists()
    build(spec(decoder, llmapi={"enable_iter_perf_stats": False}), tmp_path / "r2")  # not written: not checked


def test_the_llms_in_flight_batch_is_not_tritons_max_batch_size(decoder: Path, tmp_path: Path) -> None:
    """gpu: model.yaml wrote Triton's triton_max_batch_size (8) as LLM()'s max_batch_size, so the decoupled model's LLM
    decoded at most 8 sequences at a time; it is now left to TensorRT-LLM's default unless llmapi.max_batch_size sets
    it. cpu: the CPU engine still reads cpu.max_active there."""
    repo = build(spec(decoder), tmp_path / "gpu").repo
    args = yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    assert "max_batch_size" not in args
    assert args["triton_config"]["max_batch_size"] == read_config(repo / "tensorrt_llm" / "config.pbtxt").max_batch_size
    repo = build(spec(decoder, llmapi={"max_batch_size": 96}), tmp_path / "gpu96").repo
    assert yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())["max_batch_size"] == 96
    repo = build(spec(decoder, target="cpu", cpu={"max_active": 3}), tmp_path / "cpu").repo
    assert yaml.safe_load((repo / "tensorrt_llm" / "1" / "model.yaml").read_text())["max_batch_size"] == 3


def test_the_gpu_build_says_the_driver_its_image_needs(decoder: Path, tmp_path: Path) -> None:
    report = build(spec(decoder), tmp_path / "r", plan_only=True)
    assert [n for n in report.notes if "NVIDIA driver" in n] == [
        f"{default_image()} is built on CUDA 13.1.0.036: its GPU nodes need NVIDIA driver 590.44.01 or later (Triton's "
        "compatibility matrix for 26.07; NVIDIA's release notes for that release name the older driver branches data "
        "center GPUs may use through CUDA forward compatibility)"]
    report = build(spec(decoder, image="nvcr.io/nvidia/tritonserver:25.09-trtllm-python-py3"), tmp_path / "r2",
                   plan_only=True)
    assert any("CUDA 12.9.1.010: its GPU nodes need NVIDIA driver 575.57.08 or later" in n for n in report.notes)
    assert not [n for n in build(spec(decoder, target="cpu"), tmp_path / "c", plan_only=True).notes
                if "NVIDIA driver" in n]


def test_a_float32_checkpoint_is_served_in_bfloat16_unless_the_spec_says_otherwise(
    decoder: Path, tmp_path: Path
) -> None:
    """dtype auto reads config.json: the example's checkpoint (dequantised from GGUF) says float32, which the PyTorch
    backend's kernels mostly cannot run; model.yaml wrote no dtype, so LLM() ran it in float32."""
    import shutil

    assert json.loads((decoder / "config.json").read_text())["dtype"] == "float32"
    report = build(spec(decoder), tmp_path / "auto")
    assert yaml.safe_load((report.repo / "tensorrt_llm" / "1" / "model.yaml").read_text())["dtype"] == "bfloat16"
    assert [n for n in report.notes if "float32" in n] == [
        "tensorrt_llm: the checkpoint's config.json says float32, which TensorRT-LLM's PyTorch backend mostly cannot "
        "run: model.yaml sets dtype: bfloat16 (llmapi.dtype auto would keep float32). GPUs before Ampere (compute "
        "capability 8.0) have no bfloat16: set llmapi.dtype: float16 for them"]
    report = build(spec(decoder, llmapi={"dtype": "float16"}), tmp_path / "fp16")  # the spec's choice stands
    assert yaml.safe_load((report.repo / "tensorrt_llm" / "1" / "model.yaml").read_text())["dtype"] == "float16"
    assert not [n for n in report.notes if "float32" in n]
    bf16 = tmp_path / "bf16-checkpoint"
    shutil.copytree(decoder, bf16)
    config = json.loads((bf16 / "config.json").read_text())
    (bf16 / "config.json").write_text(json.dumps({**config, "dtype": None, "torch_dtype": "bfloat16"}))
    report = build(spec(bf16), tmp_path / "bf16")  # not float32: dtype auto is left to LLM()
    assert "dtype" not in yaml.safe_load((report.repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
    report = build(spec(decoder, target="cpu"), tmp_path / "cpu")  # the cpu engine has cpu.weights
    assert "dtype" not in yaml.safe_load((report.repo / "tensorrt_llm" / "1" / "model.yaml").read_text())
