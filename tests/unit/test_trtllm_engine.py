"""TensorRT-LLM engine plans (exact commands), the manifest and its skip logic, and container version checks.

Nothing here needs a GPU except the one test marked ``trtllm``, which really builds an engine and is skipped
(with the reason) where TensorRT-LLM, a GPU or its example scripts are missing. No engine is ever faked.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError as PydanticValidationError

from tritonforge.builders import trtllm_engine
from tritonforge.builders.checkpoints import checkpoint_hash
from tritonforge.builders.trtllm_engine import (
    MANIFEST_NAME,
    EngineSettings,
    LoraSettings,
    SpeculativeSettings,
    architecture_family,
    build_engine,
    check_engine_manifest,
    container_table,
    containers_shipping,
    engine_settings,
    gpus_needed,
    manifest_matches,
    plan_engine_build,
    read_architecture,
    read_manifest,
)
from tritonforge.errors import BuildError, SpecError


def tiny_checkpoint(folder: Path, architecture: str, model_type: str) -> Path:
    """A Hugging Face-shaped folder: config.json naming the architecture, plus a (dummy) weights file."""
    folder.mkdir(parents=True)
    config = {"architectures": [architecture], "model_type": model_type, "hidden_size": 64, "num_hidden_layers": 2}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"\0" * 64)
    return folder.resolve()


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "tiny-llama", "LlamaForCausalLM", "llama")


@pytest.fixture
def gpt2(tmp_path: Path) -> Path:
    return tiny_checkpoint(tmp_path / "tiny-gpt2", "GPT2LMHeadModel", "gpt2")


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    return tmp_path / "TensorRT-LLM" / "examples"


def build_flags(out: Path) -> list[str]:
    return ["trtllm-build", "--checkpoint_dir", f"{out}/checkpoint", "--output_dir", f"{out}/engine"]


# ------------------------------------------------------------------------------------------------ exact plans


def test_llama_plan_exact_argv(llama, examples, tmp_path):
    out = (tmp_path / "out").resolve()
    settings = EngineSettings(
        dtype="bfloat16",
        tp_size=2,
        max_batch_size=8,
        max_input_len=512,
        max_seq_len=1024,
        max_num_tokens=4096,
        lora=LoraSettings(enabled=True, max_rank=16, target_modules=["attn_q", "attn_v"]),
    )
    plan = plan_engine_build(
        llama, settings, out, architecture=read_architecture(llama), examples_dir=examples, python="python3"
    )
    assert plan.family == "llama"
    assert plan.commands == (
        (
            "python3", f"{examples}/models/core/llama/convert_checkpoint.py",
            "--model_dir", str(llama),
            "--output_dir", f"{out}/checkpoint",
            "--dtype", "bfloat16",
            "--tp_size", "2",
            "--pp_size", "1",
        ),
        (
            *build_flags(out),
            "--max_batch_size", "8",
            "--max_input_len", "512",
            "--max_seq_len", "1024",
            "--max_num_tokens", "4096",
            "--max_beam_width", "1",
            "--kv_cache_type", "paged",
            "--gpt_attention_plugin", "auto",
            "--gemm_plugin", "auto",
            "--context_fmha", "enable",
            "--use_paged_context_fmha", "enable",
            "--use_fp8_context_fmha", "disable",
            "--remove_input_padding", "enable",
            "--lora_plugin", "auto",
            "--max_lora_rank", "16",
            "--lora_target_modules", "attn_q", "attn_v",
            "--workers", "1",
        ),
    )  # fmt: skip
    assert plan.engine_dir == out / "engine"
    assert plan.manifest_path == out / "engine" / MANIFEST_NAME
    assert plan.manifest["gpus_required"] == 2


def test_gpt2_plan_exact_argv(gpt2, examples, tmp_path):
    out = (tmp_path / "out").resolve()
    settings = EngineSettings(
        paged_kv_cache=False,
        use_paged_context_fmha=False,
        kv_cache_reuse=False,
        max_input_len=256,
        max_seq_len=512,
        max_num_tokens=2048,
        max_beam_width=2,
        gather_logits="generation",
        logits_dtype="float32",
    )
    plan = plan_engine_build(
        gpt2, settings, out, architecture="GPT2LMHeadModel", examples_dir=examples, python="python3"
    )
    assert plan.family == "gpt"
    assert plan.commands == (
        (
            "python3", f"{examples}/models/core/gpt/convert_checkpoint.py",
            "--model_dir", str(gpt2),
            "--output_dir", f"{out}/checkpoint",
            "--dtype", "float16",
            "--tp_size", "1",
            "--pp_size", "1",
        ),
        (
            *build_flags(out),
            "--max_batch_size", "64",
            "--max_input_len", "256",
            "--max_seq_len", "512",
            "--max_num_tokens", "2048",
            "--max_beam_width", "2",
            "--kv_cache_type", "continuous",
            "--gpt_attention_plugin", "auto",
            "--gemm_plugin", "auto",
            "--context_fmha", "enable",
            "--use_paged_context_fmha", "disable",
            "--use_fp8_context_fmha", "disable",
            "--remove_input_padding", "enable",
            "--logits_dtype", "float32",
            "--gather_generation_logits",
            "--workers", "1",
        ),
    )  # fmt: skip


def test_quantized_plan_uses_modelopt_quantize(llama, examples, tmp_path):
    out = (tmp_path / "out").resolve()
    settings = EngineSettings(
        dtype="bfloat16", quantization="fp8", kv_cache_quantization="fp8", calib_dataset="/data/cnn"
    )
    plan = plan_engine_build(
        llama, settings, out, architecture="MistralForCausalLM", examples_dir=examples, python="py"
    )
    assert plan.family == "llama"  # Mistral converts with the llama recipe
    assert plan.commands[0] == (
        "py", f"{examples}/quantization/quantize.py",
        "--model_dir", str(llama),
        "--output_dir", f"{out}/checkpoint",
        "--dtype", "bfloat16",
        "--tp_size", "1",
        "--pp_size", "1",
        "--qformat", "fp8",
        "--kv_cache_dtype", "fp8",
        "--calib_size", "512",
        "--calib_dataset", "/data/cnn",
    )  # fmt: skip
    assert plan.commands[1][plan.commands[1].index("--use_fp8_context_fmha") + 1] == "enable"


def test_kv_cache_quantization_alone_keeps_full_precision_weights(gpt2, examples, tmp_path):
    plan = plan_engine_build(
        gpt2, EngineSettings(kv_cache_quantization="int8"), tmp_path / "o", architecture="gpt2", examples_dir=examples
    )
    argv = plan.commands[0]
    assert argv[argv.index("--qformat") + 1] == "full_prec"
    assert argv[argv.index("--kv_cache_dtype") + 1] == "int8"


def test_speculative_plans(llama, examples, tmp_path):
    draft = EngineSettings(speculative=SpeculativeSettings(mode="draft_tokens_external", max_draft_len=4))
    plan = plan_engine_build(llama, draft, tmp_path / "a", architecture="llama", examples_dir=examples, python="py")
    assert plan.commands[1][-6:] == (
        "--speculative_decoding_mode",
        "draft_tokens_external",
        "--max_draft_len",
        "4",
        "--workers",
        "1",
    )

    medusa = EngineSettings(speculative=SpeculativeSettings(mode="medusa", medusa_model_dir="/heads", max_draft_len=63))
    plan = plan_engine_build(llama, medusa, tmp_path / "b", architecture="llama", examples_dir=examples, python="py")
    assert plan.commands[0][:2] == ("py", f"{examples}/medusa/convert_checkpoint.py")
    assert plan.commands[0][-6:] == (
        "--medusa_model_dir",
        "/heads",
        "--num_medusa_heads",
        "4",
        "--max_medusa_token_len",
        "63",
    )
    assert plan.commands[1][-4:] == ("--speculative_decoding_mode", "medusa", "--workers", "1")


def test_medusa_needs_a_llama_family_checkpoint(gpt2, examples, tmp_path):
    settings = EngineSettings(speculative=SpeculativeSettings(mode="medusa", medusa_model_dir="/heads"))
    with pytest.raises(BuildError, match="Llama-family checkpoints; GPT2LMHeadModel is gpt"):
        plan_engine_build(gpt2, settings, tmp_path / "o", architecture="GPT2LMHeadModel", examples_dir=examples)


def test_old_examples_layout_is_used_when_it_is_the_one_present(llama, tmp_path):
    examples = tmp_path / "old" / "examples"
    (examples / "llama").mkdir(parents=True)
    (examples / "llama" / "convert_checkpoint.py").write_text("# old layout\n")
    plan = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama", examples_dir=examples)
    assert plan.commands[0][1] == f"{examples}/llama/convert_checkpoint.py"


def test_examples_dir_defaults_to_the_environment(llama, tmp_path, monkeypatch):
    monkeypatch.setenv("TRTLLM_EXAMPLES_DIR", "/src/TensorRT-LLM/examples")
    plan = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama")
    assert plan.commands[0][1] == "/src/TensorRT-LLM/examples/models/core/llama/convert_checkpoint.py"


def test_architecture_families():
    assert architecture_family("Qwen2ForCausalLM") == "qwen"
    assert architecture_family("gpt2") == "gpt"
    with pytest.raises(BuildError, match="'BertModel' has no TensorRT-LLM build recipe"):
        architecture_family("BertModel")


def test_read_architecture_errors_name_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BuildError, match=r"config\.json: 'architectures' is missing"):
        read_architecture(tmp_path)


def test_more_gpus_than_the_machine_has(llama, tmp_path):
    settings = EngineSettings(tp_size=2, pp_size=2)
    with pytest.raises(BuildError, match=r"tp_size 2 × pp_size 2 = 4 GPUs, but the build machine has 2"):
        plan_engine_build(llama, settings, tmp_path / "o", architecture="llama", gpus=2)
    assert gpus_needed(settings, [[0, 1, 2, 3], [4, 5]]) == [
        "gpu_device_ids instance 1 lists 2 GPU(s) but the engine needs tp_size 2 × pp_size 2 = 4"
    ]


# ------------------------------------------------------------------------------------------------ settings


def test_bad_settings_are_all_reported_with_their_paths():
    with pytest.raises(SpecError) as info:
        engine_settings(
            {
                "max_input_len": 4096,
                "max_seq_len": 2048,
                "max_num_tokens": 1024,
                "paged_kv_cache": False,
                "chunked_context": True,
                "speculative": {"mode": "draft_tokens_external"},
                "gather_logits": "all",
                "max_beam_width": 4,
                "dtype": "float8",
            }
        )
    found = {p.where: p.message for p in info.value.problems}
    assert found["max_input_len"] == (
        "4096 must be smaller than max_seq_len 2048: max_seq_len counts the prompt and the generated tokens"
    )
    assert found["use_paged_context_fmha"] == "needs paged_kv_cache"
    assert found["kv_cache_reuse"] == "needs paged_kv_cache"
    assert found["chunked_context"] == "needs paged_kv_cache"
    assert found["speculative.max_draft_len"] == "must be at least 1 for draft_tokens_external"
    assert "not supported with speculative decoding" in found["gather_logits"]
    assert found["max_beam_width"] == "4: speculative decoding runs with beam width 1"
    assert "'float8' is not allowed" in found["dtype"]
    assert "max_num_tokens" not in found  # chunked_context lifts the max_num_tokens >= max_input_len rule


@pytest.mark.parametrize(
    ("data", "field", "text"),
    [
        ({"max_num_tokens": 512, "max_input_len": 1024}, "max_num_tokens", "only runs with chunked_context"),
        ({"use_paged_context_fmha": False}, "kv_cache_reuse", "needs use_paged_context_fmha"),
        ({"speculative": {"mode": "medusa"}}, "speculative", "must name the Medusa heads' checkpoint"),
        ({"speculative": {"mode": "eagle"}}, "speculative", "must name the EAGLE checkpoint"),
        ({"lora": {"enabled": True, "target_modules": []}}, "lora", "name at least one of attn_qkv"),
        ({"lora": {"lora_dirs": ["/a"]}}, "lora", "only used with lora.enabled"),
        ({"kv_cache_quantization": "fp8", "dtype": "float32"}, "kv_cache_quantization", "float16 or bfloat16"),
        (
            {"quantization": "int4_awq", "speculative": {"mode": "eagle", "eagle_model_dir": "/e"}},
            "quantization",
            "unquantized only",
        ),
        ({"tp_size": 0}, "tp_size", "greater than or equal to 1"),
    ],
)
def test_bad_setting_combinations(data, field, text):
    with pytest.raises(PydanticValidationError) as info:
        EngineSettings.model_validate(data)
    messages = [e["msg"] for e in info.value.errors() if e["loc"][0] == field]
    assert any(text in m for m in messages), messages


# ------------------------------------------------------------------------------------------------ manifest


def finished(plan, version="0.16.0"):
    """What build_engine leaves behind: the engine's config.json and the manifest with the runtime versions."""
    plan.engine_dir.mkdir(parents=True, exist_ok=True)
    (plan.engine_dir / "config.json").write_text("{}")
    manifest = {**plan.manifest, "tensorrt_llm_version": version, "tensorrt_version": "10.7.0",
                "gpu_compute_capability": "9.0"}  # fmt: skip
    plan.manifest_path.write_text(json.dumps(manifest))
    return manifest


def test_manifest_records_the_plan(llama, tmp_path):
    plan = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama", python="py")
    m = plan.manifest
    assert m["checkpoint_sha256"] == checkpoint_hash(llama) == plan.checkpoint_sha256
    assert m["settings"] == EngineSettings().model_dump(mode="json")
    assert m["architecture"] == "llama"
    assert m["commands"][0][0].endswith("convert_checkpoint.py")  # the interpreter is not part of the plan
    again = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama", python="/other/python")
    assert again.fingerprint == plan.fingerprint
    changed = plan_engine_build(llama, EngineSettings(max_batch_size=8), tmp_path / "o", architecture="llama")
    assert changed.fingerprint != plan.fingerprint
    (llama / "model.safetensors").write_bytes(b"\1" * 64)
    retrained = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama", python="py")
    assert retrained.fingerprint != plan.fingerprint


def test_manifest_matching(llama, tmp_path):
    plan = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama")
    assert not manifest_matches(read_manifest(plan.engine_dir), plan)  # nothing built yet
    assert not manifest_matches(plan.manifest, plan)  # a plan is not a build: no TensorRT-LLM version in it
    manifest = finished(plan)
    assert manifest_matches(read_manifest(plan.engine_dir), plan)
    assert manifest_matches(manifest, plan, tensorrt_llm_version="0.16.0")
    assert not manifest_matches(manifest, plan, tensorrt_llm_version="0.17.0")
    other = plan_engine_build(llama, EngineSettings(max_seq_len=4096), tmp_path / "o", architecture="llama")
    assert not manifest_matches(manifest, other)
    (plan.engine_dir / "config.json").unlink()
    assert not manifest_matches(manifest, plan)  # the engine itself is gone


def test_build_is_skipped_when_the_manifest_matches(llama, tmp_path, monkeypatch):
    monkeypatch.setattr(trtllm_engine.importlib.util, "find_spec", lambda name: None)
    plan = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama")
    manifest = finished(plan)
    said = []
    assert build_engine(plan, said.append) == manifest
    assert said == [f"engine up to date: {plan.engine_dir} (built with TensorRT-LLM 0.16.0)"]


def test_build_without_tensorrt_llm_says_how_to_get_it(llama, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        trtllm_engine.importlib.util, "find_spec", lambda name: None if name == "tensorrt_llm" else real(name)
    )
    plan = plan_engine_build(llama, EngineSettings(), tmp_path / "o", architecture="llama")
    with pytest.raises(BuildError) as info:
        build_engine(plan)
    assert str(info.value) == (
        "TensorRT-LLM is not installed, so no engine can be built here: "
        'pip install "tritonforge[gpu]" on a machine with an NVIDIA GPU'
    )
    assert not plan.engine_dir.exists()  # nothing is faked


# ------------------------------------------------------------------------------------------------ containers


def test_container_table_covers_2024_05_to_2025():
    table = container_table()
    for tag in ("24.05", "24.06", "24.07", "24.08", "24.09", "24.10", "24.11", "24.12", "25.01", "25.06", "25.12"):
        assert tag in table
    assert table["24.05"]["tensorrt_llm"] == "0.9.0"
    assert table["24.12"]["tensorrt_llm"] == "0.16.0"
    assert table["25.08"]["tensorrt_llm"] == "0.21.0"
    assert all("verified" in row for row in table.values())
    assert containers_shipping("0.20.0") == ["25.06", "25.07"]


def test_matching_engine_and_container():
    manifest = {"tensorrt_llm_version": "0.16.0", "tensorrt_version": "10.7.0", "gpu_compute_capability": "9.0"}
    assert check_engine_manifest(manifest, "24.12-trtllm-python-py3") == []
    assert check_engine_manifest(manifest, "nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3") == []
    assert check_engine_manifest(manifest, "24.12", compute_capability="9.0") == []


def test_post_releases_share_the_release():
    manifest = {"tensorrt_llm_version": "0.17.0.post1", "tensorrt_version": "10.8.0.43"}
    assert check_engine_manifest(manifest, "25.01-trtllm-python-py3") == []


def test_tensorrt_llm_mismatch_names_both_versions():
    manifest = {"tensorrt_llm_version": "0.15.0", "tensorrt_version": "10.6.0"}
    assert check_engine_manifest(manifest, "24.12-trtllm-python-py3") == [
        "engine built with TensorRT-LLM 0.15.0 but tritonserver:24.12-trtllm-python-py3 ships 0.16.0: rebuild the "
        "engine or change the image (images with TensorRT-LLM 0.15.0: 24.11)",
        "engine built with TensorRT 10.6.0 but tritonserver:24.12-trtllm-python-py3 ships TensorRT 10.7.0: TensorRT "
        "refuses engines serialized by another version; rebuild the engine or change the image",
    ]


def test_other_container_problems():
    manifest = {"tensorrt_llm_version": "0.9.0", "gpu_compute_capability": "7.0"}
    assert check_engine_manifest(manifest, "24.05-py3") == [
        "tritonserver:24.05-py3 has no TensorRT-LLM backend: serve TensorRT-LLM engines with "
        "tritonserver:24.05-trtllm-python-py3"
    ]
    assert check_engine_manifest(manifest, "latest") == [
        "cannot read a release from container tag 'latest': expected <yy.mm>-trtllm-python-py3"
    ]
    unknown = check_engine_manifest(manifest, "30.01-trtllm-python-py3")
    assert unknown == [
        "no TensorRT-LLM version is known for tritonserver:30.01-trtllm-python-py3 (known: 24.04 to 26.07): check "
        "that release's notes before serving this engine with it"
    ]
    assert check_engine_manifest(manifest, "24.05", compute_capability="8.0") == [
        "engine built on a GPU of compute capability 7.0 but the serving GPU has 8.0: TensorRT engines are specific "
        "to the GPU architecture; rebuild on the serving GPU type"
    ]
    too_old = {"tensorrt_llm_version": "0.17.0", "gpu_compute_capability": "7.0"}
    assert check_engine_manifest(too_old, "25.01") == [
        "tritonserver:25.01-trtllm-python-py3 supports compute capability 7.5 and later; the engine's is 7.0"
    ]
    assert check_engine_manifest({}, "24.12") == [
        "the engine manifest records no tensorrt_llm_version (was the engine built by tritonforge?)"
    ]


# ------------------------------------------------------------------------------------------------ a real build


def _real_build_reason() -> str | None:
    if importlib.util.find_spec("tensorrt_llm") is None:
        return 'TensorRT-LLM is not installed (pip install "tritonforge[gpu]" on a machine with an NVIDIA GPU)'
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU visible"
    except ImportError:
        return "torch is not installed"
    examples = Path(os.environ.get("TRTLLM_EXAMPLES_DIR", trtllm_engine.DEFAULT_EXAMPLES_DIR))
    if (
        not (examples / "models" / "core" / "llama" / "convert_checkpoint.py").is_file()
        and not (examples / "llama" / "convert_checkpoint.py").is_file()
    ):
        return f"TensorRT-LLM's example scripts are not at {examples} (set TRTLLM_EXAMPLES_DIR)"
    return None


@pytest.mark.trtllm
@pytest.mark.gpu
@pytest.mark.skipif(_real_build_reason() is not None, reason=str(_real_build_reason()))
def test_real_engine_build(tmp_path):
    """Build a tiny random Llama into a real engine, then skip the rebuild and check it against its container."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    checkpoint = tmp_path / "tiny-llama"
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(checkpoint, safe_serialization=True)
    settings = EngineSettings(max_batch_size=2, max_input_len=64, max_seq_len=128, max_num_tokens=256)
    plan = plan_engine_build(checkpoint, settings, tmp_path / "out", architecture=read_architecture(checkpoint))
    manifest = build_engine(plan)
    assert (plan.engine_dir / "config.json").is_file()
    assert read_manifest(plan.engine_dir) == manifest
    assert manifest["checkpoint_sha256"] == checkpoint_hash(checkpoint)
    said = []
    assert build_engine(plan, said.append) == manifest
    assert said == [f"engine up to date: {plan.engine_dir}"]
    tags = containers_shipping(manifest["tensorrt_llm_version"])
    if tags:
        assert not any("TensorRT-LLM" in p for p in check_engine_manifest(manifest, tags[-1]))


def test_validate_checks_engine_manifests_against_the_serving_image(tmp_path):
    """`tritonforge validate --image` (or the image a build recorded) catches an engine built for another release."""
    import json

    from tritonforge.validator import check_repository

    engine = tmp_path / "tensorrt_llm" / "1" / "engine"
    engine.mkdir(parents=True)
    (engine / "engine_manifest.json").write_text(json.dumps({"tensorrt_llm_version": "0.15.0"}))
    problems = check_repository(tmp_path, image="nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3")
    engine_problems = [p for p in problems if p.where.endswith("engine_manifest.json")]
    assert len(engine_problems) == 1
    assert engine_problems[0].message.startswith("engine built with TensorRT-LLM 0.15.0 but tritonserver:24.12")
    assert not [p for p in check_repository(tmp_path, image="24.11-trtllm-python-py3") if "engine built" in p.message]
    (tmp_path / "tritonforge.json").write_text(json.dumps({"image": "24.12-trtllm-python-py3"}))
    assert [p for p in check_repository(tmp_path) if "engine built" in p.message]
