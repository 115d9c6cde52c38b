"""LoRA adapters: the spec, the build-time checks, the rendered model set and the preprocessing lookup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import fake_pb_utils as fpb
import numpy as np
import pytest

from tritonforge.builders.lora import task_id
from tritonforge.errors import BuildError, SpecError

BACKENDS = Path(__file__).resolve().parents[2] / "python_backends"

# these tests call peft themselves (PeftModel.from_pretrained as the reference): peft 0.21 reads transformers 5's
# deprecated `is_gradient_checkpointing`, a FutureWarning that is peft's to fix (the product's own peft calls filter
# exactly this one: builders/tiny_models.py, python_backends/cpu_llm/model.py)
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora

    root = tmp_path_factory.mktemp("lora")
    make_tiny_decoder(root / "decoder")
    make_tiny_lora(root / "decoder", root / "adapters" / "alpha", 1)
    make_tiny_lora(root / "decoder", root / "adapters" / "beta", 2)
    return root


def llm(folders: Path, adapters: dict[str, Any], **extra: Any) -> Any:
    from tritonforge.spec import parse_spec

    spec = parse_spec(
        {"name": "t", "target": "cpu",
         "models": {"chat": {"kind": "llm", "checkpoint": "decoder", "max_input_len": 64, "max_seq_len": 128,
                             "adapters": adapters, **extra}}},
        source_dir=folders,
    )
    return spec.models["chat"]


def render(folders: Path, adapters: dict[str, Any], target: str = "cpu", **extra: Any) -> Any:
    from tritonforge.builders.llm import llm_model_set

    return llm_model_set("chat", llm(folders, adapters, **extra), target, folders / "decoder")


# ------------------------------------------------------------------------------------------------ spec


def test_the_spec_types_adapters(folders: Path) -> None:
    model = llm(folders, {"alpha": {"path": "adapters/alpha", "system_prompt": "Be brief."}})
    assert model.adapters["alpha"].path == "adapters/alpha"
    assert model.adapters["alpha"].system_prompt == "Be brief."
    assert model.adapters["alpha"].base_checkpoint_sha256 is None
    assert llm(folders, {}).adapters == {}


def test_bad_adapter_entries_are_refused_with_their_path(folders: Path) -> None:
    with pytest.raises(SpecError) as err:
        llm(folders, {"__base__": {"path": "x"}, "bad name": {"path": "y"}, "ok": {"path": "z", "extra": 1}})
    text = str(err.value)
    assert "adapters.__base__" in text and "reserved" in text
    assert "adapters.bad name" in text
    assert "extra" in text


# ----------------------------------------------------------------------------------------------- build


def test_the_cpu_set_ships_adapters_table_and_wiring(folders: Path) -> None:
    out = render(folders, {"beta": {"path": "adapters/beta"},
                           "alpha": {"path": "adapters/alpha", "system_prompt": "You are alpha."}})
    table = json.loads(out.files["preprocessing/1/adapters.json"])
    assert table == {"adapters": {
        "alpha": {"lora_task_id": task_id("alpha"), "path": "adapters/alpha", "system_prompt": "You are alpha."},
        "beta": {"lora_task_id": task_id("beta"), "path": "adapters/beta", "system_prompt": None}}}
    assert out.files["tensorrt_llm/1/adapters.json"] == out.files["preprocessing/1/adapters.json"]
    for name in ("alpha", "beta"):
        assert f"tensorrt_llm/1/adapters/{name}/adapter_config.json" in out.files
        assert f"tensorrt_llm/1/adapters/{name}/adapter_model.safetensors" in out.files
    pre, trt, ens = out.configs["preprocessing"], out.configs["tensorrt_llm"], out.configs["llm"]
    assert pre.parameters["adapters_table"].string_value == "adapters.json"
    assert trt.parameters["adapters_table"].string_value == "adapters.json"
    assert "lora_name" in [i.name for i in ens.input] and "lora_name" in [i.name for i in pre.input]
    assert "OUT_LORA_TASK_ID" in [o.name for o in pre.output]
    steps = {s.model_name: s for s in ens.ensemble_scheduling.step}
    assert steps["preprocessing"].input_map["lora_name"] == "lora_name"
    assert steps["preprocessing"].input_map["LORA_TASK_ID"] == "lora_task_id"
    assert steps["preprocessing"].output_map["OUT_LORA_TASK_ID"] == "_LORA_TASK_ID"
    assert steps["tensorrt_llm"].input_map["lora_task_id"] == "_LORA_TASK_ID"


def test_without_adapters_nothing_changes(folders: Path) -> None:
    out = render(folders, {})
    assert not any("adapters" in path for path in out.files)
    assert "lora_name" not in [i.name for i in out.configs["llm"].input]
    steps = {s.model_name: s for s in out.configs["llm"].ensemble_scheduling.step}
    assert steps["tensorrt_llm"].input_map["lora_task_id"] == "lora_task_id"


def test_the_set_validates_as_triton_would(folders: Path, tmp_path: Path) -> None:
    from tritonforge.build import build

    (folders / "spec.yaml").write_text(
        "name: t\ntarget: cpu\nmodels:\n  chat:\n    kind: llm\n    checkpoint: decoder\n    max_input_len: 64\n"
        "    max_seq_len: 128\n    adapters:\n      alpha: {path: adapters/alpha}\n", encoding="utf-8")
    build(folders / "spec.yaml", tmp_path / "repo", target="cpu")  # validated before it is swapped in
    assert (tmp_path / "repo" / "tensorrt_llm" / "1" / "adapters" / "alpha" / "adapter_config.json").is_file()


def test_an_adapter_for_another_base_model_is_refused_naming_both_hashes(folders: Path) -> None:
    from tritonforge.builders.checkpoints import checkpoint_hash

    actual = checkpoint_hash(folders / "decoder")
    wrong = "0" * 64
    with pytest.raises(BuildError, match="adapter for another base model") as err:
        render(folders, {"alpha": {"path": "adapters/alpha", "base_checkpoint_sha256": wrong}})
    assert wrong in str(err.value) and actual in str(err.value)
    render(folders, {"alpha": {"path": "adapters/alpha", "base_checkpoint_sha256": actual}})  # the right one


def test_missing_adapter_files_are_refused(folders: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(BuildError) as err:
        render(folders, {"gone": {"path": str(tmp_path / "nowhere")}, "broken": {"path": str(broken)}})
    text = str(err.value)
    assert "adapters.gone" in text and "does not exist" in text
    assert "adapters.broken" in text and "adapter_model.safetensors" in text


def test_gpu_renders_the_table_and_lora_cache_and_converts_the_adapters(folders: Path) -> None:
    with pytest.raises(BuildError, match=r"engine\.lora\.enabled"):
        render(folders, {"alpha": {"path": "adapters/alpha"}}, target="gpu")
    out = render(folders, {"alpha": {"path": "adapters/alpha"}, "beta": {"path": "adapters/beta"}}, target="gpu",
                 engine={"lora": {"enabled": True, "max_rank": 8}})
    trt = out.configs["tensorrt_llm"]
    assert trt.backend == "tensorrtllm"
    assert trt.parameters["lora_prefetch_dir"].string_value == "/models/tensorrt_llm/1/lora"
    assert "lora_cache_max_adapter_size" in trt.parameters
    assert "adapters_table" not in trt.parameters
    assert json.loads(out.files["preprocessing/1/adapters.json"])["adapters"]["beta"]["lora_task_id"] == task_id("beta")
    for model in ("tensorrt_llm", "preprocessing"):  # converted: preloaded by the engine, sent by preprocessing
        for number in (task_id("alpha"), task_id("beta")):
            assert {f"{model}/1/lora/{number}/model.lora_{k}.npy" for k in ("weights", "config")} <= set(out.files)
    assert any("2 LoRA adapter(s) converted to TensorRT-LLM's format" in n for n in out.notes)
    pre, ens = out.configs["preprocessing"], out.configs["llm"]
    assert pre.parameters["lora_weights_dir"].string_value == "lora"
    assert {"LORA_WEIGHTS", "LORA_CONFIG", "lora_send_weights"} <= {i.name for i in pre.input}
    assert {"OUT_LORA_WEIGHTS", "OUT_LORA_CONFIG"} <= {o.name for o in pre.output}
    steps = {s.model_name: s for s in ens.ensemble_scheduling.step}
    assert steps["preprocessing"].input_map["LORA_WEIGHTS"] == "lora_weights"
    assert steps["tensorrt_llm"].input_map["lora_weights"] == steps["preprocessing"].output_map["OUT_LORA_WEIGHTS"]
    assert steps["tensorrt_llm"].input_map["lora_config"] == steps["preprocessing"].output_map["OUT_LORA_CONFIG"]


def test_the_gpu_set_validates_as_triton_would(folders: Path, tmp_path: Path) -> None:
    from tritonforge.repository import materialize
    from tritonforge.validator import check_repository

    out = render(folders, {"alpha": {"path": "adapters/alpha"}}, target="gpu",
                 engine={"lora": {"enabled": True, "max_rank": 8}})
    materialize(out.files, tmp_path)
    check_repository(tmp_path)


def test_the_trtllm_conversion_reproduces_the_adapters_own_weight_deltas(folders: Path) -> None:
    """ΔW = B·A·scale read back from TensorRT-LLM's layout equals what peft merges into the base weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tritonforge.builders.lora_trtllm import MODULE_IDS, convert_adapter, deltas

    converted = convert_adapter(folders / "adapters" / "alpha", dtype="float32")
    base = AutoModelForCausalLM.from_pretrained(str(folders / "decoder"), dtype=torch.float32)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, str(folders / "adapters" / "alpha")).merge_and_unload().state_dict()
    modules = {"q_proj": ("self_attn", "attn_q"), "v_proj": ("self_attn", "attn_v"), "down_proj": ("mlp", "mlp_4h_to_h")}
    expected, shapes = {}, {}
    for layer in range(2):
        for hf, (block, trt) in modules.items():
            key = f"model.layers.{layer}.{block}.{hf}.weight"
            expected[(layer, MODULE_IDS[trt])] = (merged[key] - before[key]).numpy()
            shapes[(layer, MODULE_IDS[trt])] = tuple(before[key].shape)
    assert converted.config.shape == (1, 6, 3) and converted.config.dtype == np.int32
    assert set(map(tuple, converted.config[0, :, :2].tolist())) == {(m, layer) for layer, m in expected}
    assert (converted.config[0, :, 2] == 4).all()  # the adapters' rank
    got = deltas(converted, shapes)
    for key, delta in expected.items():
        assert np.abs(got[key] - delta).max() < 1e-5, key
    fp16 = convert_adapter(folders / "adapters" / "alpha")
    assert fp16.weights.dtype == np.float16 and fp16.weights.shape == converted.weights.shape


def test_conversion_refuses_modules_tensorrt_llm_cannot_take(folders: Path, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from tritonforge.builders.lora_trtllm import convert_adapter

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    save_file({"base_model.model.model.layers.0.self_attn.rotary.lora_A.weight": np.zeros((2, 8), np.float32),
               "base_model.model.model.layers.0.self_attn.rotary.lora_B.weight": np.zeros((8, 2), np.float32)},
              str(bad / "adapter_model.safetensors"))
    with pytest.raises(BuildError, match="module 'rotary' has no TensorRT-LLM equivalent"):
        convert_adapter(bad)


# --------------------------------------------------------------------------------------- preprocessing


@pytest.fixture(scope="module")
def pre(folders: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    model_dir = tmp_path_factory.mktemp("repo") / "preprocessing"
    (model_dir / "1").mkdir(parents=True)
    shutil.copytree(folders / "decoder", model_dir / "1" / "tokenizer")
    table = {"adapters": {"alpha": {"lora_task_id": 1, "path": "adapters/alpha", "system_prompt": "You are alpha."},
                          "beta": {"lora_task_id": 2, "path": "adapters/beta", "system_prompt": None}}}
    (model_dir / "1" / "adapters.json").write_text(json.dumps(table))
    config = {"name": "preprocessing", "max_batch_size": 8,
              "parameters": {"adapters_table": {"string_value": "adapters.json"}}}
    with pytest.MonkeyPatch.context() as mp:
        module = fpb.load_model(BACKENDS / "llm_preprocessing/model.py", mp, "lora_pre_under_test")  # its shipped folder
        instance = module.TritonPythonModel()
        instance.initialize(fpb.initialize_args(config, model_dir))
        yield instance


def preprocess(pre: Any, queries: list[str], **extra: np.ndarray) -> Any:
    inputs = {"QUERY": fpb.strings([[q] for q in queries]),
              "REQUEST_OUTPUT_LEN": np.full((len(queries), 1), 8, dtype=np.int32), **extra}
    request = fpb.Request(**inputs)
    (response,) = pre.execute([request])
    return response


def output(response: Any, name: str) -> Any:
    assert not response.has_error(), response.error().message()
    tensor = fpb.get_output_tensor_by_name(response, name)
    return None if tensor is None else tensor.as_numpy()


def test_a_name_is_looked_up_and_its_task_id_sent_on(pre: Any) -> None:
    response = preprocess(pre, ["hi", "ho"], lora_name=fpb.strings([["beta"], ["beta"]]))
    assert output(response, "OUT_LORA_TASK_ID").tolist() == [[2], [2]]
    assert output(response, "OUT_LORA_TASK_ID").dtype == np.uint64
    plain = preprocess(pre, ["hi", "ho"])
    np.testing.assert_array_equal(output(response, "INPUT_ID"), output(plain, "INPUT_ID"))  # no system prompt


def test_no_name_means_the_base_model(pre: Any) -> None:
    assert output(preprocess(pre, ["hi"]), "OUT_LORA_TASK_ID") is None
    assert output(preprocess(pre, ["hi"], lora_name=fpb.strings([[""]])), "OUT_LORA_TASK_ID") is None


def test_an_upstream_lora_task_id_passes_through(pre: Any) -> None:
    response = preprocess(pre, ["hi"], LORA_TASK_ID=np.array([[7]], dtype=np.uint64))
    assert output(response, "OUT_LORA_TASK_ID").tolist() == [[7]]


def test_the_system_prompt_goes_through_the_chat_template(pre: Any, folders: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders / "decoder")
    messages = [{"role": "system", "content": "You are alpha."}, {"role": "user", "content": "hi"}]
    want = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    response = preprocess(pre, ["hi"], lora_name=fpb.strings([["alpha"]]))
    ids = output(response, "INPUT_ID")[0, : int(output(response, "REQUEST_INPUT_LEN")[0, 0])]
    assert ids.tolist() == tok.encode(want, add_special_tokens=False)
    assert output(response, "OUT_LORA_TASK_ID").tolist() == [[1]]


def test_an_unknown_name_gets_an_error_listing_the_known_ones(pre: Any) -> None:
    response = preprocess(pre, ["hi"], lora_name=fpb.strings([["gamma"]]))
    assert response.has_error()
    message = response.error().message()
    assert "unknown adapter 'gamma' (lora_name): known adapters are alpha, beta" in message
    assert "base model" in message
    # a blank name served the base model silently
    blank = preprocess(pre, ["hi"], lora_name=fpb.strings([["   "]]))
    assert blank.has_error() and "lora_name is blank" in blank.error().message()


def test_mixing_adapter_and_base_rows_in_one_request_is_refused(pre: Any) -> None:
    response = preprocess(pre, ["hi", "ho"], lora_name=fpb.strings([["alpha"], [""]]))
    assert response.has_error() and "separate requests" in response.error().message()


# ------------------------------------------------------------------- gpu: weights go with the first request


@pytest.fixture()
def gpu_pre(folders: Path, tmp_path: Path) -> Any:
    """Preprocessing as the gpu target ships it: the adapters converted to TensorRT-LLM's format in lora/<id>/."""
    from tritonforge.builders.lora_trtllm import convert_adapter

    model_dir = tmp_path / "preprocessing"
    (model_dir / "1").mkdir(parents=True)
    shutil.copytree(folders / "decoder", model_dir / "1" / "tokenizer")
    table = {"adapters": {"alpha": {"lora_task_id": 1, "path": "adapters/alpha", "system_prompt": None},
                          "beta": {"lora_task_id": 2, "path": "adapters/beta", "system_prompt": None}}}
    (model_dir / "1" / "adapters.json").write_text(json.dumps(table))
    for name, number in (("alpha", 1), ("beta", 2)):
        convert_adapter(folders / "adapters" / name).save(model_dir / "1" / "lora" / str(number))
    config = {"name": "preprocessing", "max_batch_size": 8, "parameters": {
        "adapters_table": {"string_value": "adapters.json"}, "lora_weights_dir": {"string_value": "lora"}}}
    with pytest.MonkeyPatch.context() as mp:
        module = fpb.load_model(BACKENDS / "llm_preprocessing/model.py", mp, "lora_gpu_pre_under_test")  # its shipped folder
        instance = module.TritonPythonModel()
        instance.initialize(fpb.initialize_args(config, model_dir))
        yield instance, model_dir


def test_gpu_weights_go_with_the_first_request_of_each_adapter_and_again_when_asked(gpu_pre: Any) -> None:
    pre, model_dir = gpu_pre
    alpha = np.load(model_dir / "1" / "lora" / "1" / "model.lora_weights.npy")
    alpha_config = np.load(model_dir / "1" / "lora" / "1" / "model.lora_config.npy")
    first = preprocess(pre, ["hi"], lora_name=fpb.strings([["alpha"]]))
    assert np.array_equal(output(first, "OUT_LORA_WEIGHTS"), alpha)  # [1, rows, width], as TensorRT-LLM takes it
    assert np.array_equal(output(first, "OUT_LORA_CONFIG"), alpha_config)
    assert output(first, "OUT_LORA_TASK_ID").tolist() == [[1]]
    again = preprocess(pre, ["hi"], lora_name=fpb.strings([["alpha"]]))
    assert output(again, "OUT_LORA_WEIGHTS") is None  # the engine has them in its LoRA cache now
    assert output(again, "OUT_LORA_TASK_ID").tolist() == [[1]]
    # after "LoRA task 1 not found in cache" (evicted) the client asks again
    resent = preprocess(pre, ["hi"], lora_name=fpb.strings([["alpha"]]), lora_send_weights=np.array([[True]]))
    assert np.array_equal(output(resent, "OUT_LORA_WEIGHTS"), alpha)
    beta = preprocess(pre, ["a", "b"], lora_name=fpb.strings([["beta"], ["beta"]]))
    assert output(beta, "OUT_LORA_WEIGHTS").shape[0] == 2  # one copy per batch item
    assert output(preprocess(pre, ["base"]), "OUT_LORA_WEIGHTS") is None


def test_gpu_weights_sent_by_the_client_pass_through(gpu_pre: Any) -> None:
    pre, _ = gpu_pre
    weights, config = np.ones((1, 2, 6), np.float16), np.array([[[1, 0, 2], [3, 0, 2]]], np.int32)
    response = preprocess(pre, ["hi"], LORA_TASK_ID=np.array([[9]], np.uint64), LORA_WEIGHTS=weights,
                          LORA_CONFIG=config)
    assert np.array_equal(output(response, "OUT_LORA_WEIGHTS"), weights)
    assert np.array_equal(output(response, "OUT_LORA_CONFIG"), config)
    bad = preprocess(pre, ["hi"], LORA_TASK_ID=np.array([[9]], np.uint64), LORA_WEIGHTS=weights)
    assert bad.has_error() and "without lora_config" in bad.error().message()


# ------------------------------------------------------------------------------------------------ engine dtype


@pytest.fixture(scope="module")
def peft_deltas(folders: Path) -> tuple[dict[Any, np.ndarray], dict[Any, tuple[int, int]]]:
    """peft's merged ΔW per (layer, module id) of adapter alpha, and each weight's (out_dim, in_dim)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tritonforge.builders.lora_trtllm import MODULE_IDS

    base = AutoModelForCausalLM.from_pretrained(str(folders / "decoder"), dtype=torch.float32)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, str(folders / "adapters" / "alpha")).merge_and_unload().state_dict()
    modules = {
        "q_proj": ("self_attn", "attn_q"),
        "v_proj": ("self_attn", "attn_v"),
        "down_proj": ("mlp", "mlp_4h_to_h"),
    }
    expected, shapes = {}, {}
    for layer in range(2):
        for hf, (block, trt) in modules.items():
            key = f"model.layers.{layer}.{block}.{hf}.weight"
            expected[(layer, MODULE_IDS[trt])] = (merged[key] - before[key]).numpy()
            shapes[(layer, MODULE_IDS[trt])] = tuple(before[key].shape)
    return expected, shapes


# stored numpy dtype (bf16: its bit pattern) and the relative error one rounding of A and B·scale allows
DTYPE_CASES = [("float16", np.float16, 2e-3), ("bfloat16", np.uint16, 2e-2), ("float32", np.float32, 1e-5)]


@pytest.mark.parametrize(("dtype", "stored", "tolerance"), DTYPE_CASES)
def test_the_conversion_stores_the_engines_dtype_and_keeps_peft_deltas(
    folders: Path, tmp_path: Path, peft_deltas: Any, dtype: str, stored: Any, tolerance: float
) -> None:
    from tritonforge.builders.lora_trtllm import WEIGHTS_FILE, TrtllmLora, convert_adapter, deltas

    converted = convert_adapter(folders / "adapters" / "alpha", dtype=dtype)
    assert converted.weights.dtype == stored
    # what lora_prefetch_dir and preprocessing read back is the same array
    saved = converted.save(tmp_path / "1")
    reloaded = np.load(saved[WEIGHTS_FILE])
    assert reloaded.dtype == stored and np.array_equal(reloaded, converted.weights)
    expected, shapes = peft_deltas
    got = deltas(TrtllmLora(reloaded, converted.config), shapes)
    for key, delta in expected.items():
        scale = np.abs(delta).max()
        assert scale > 0, key
        assert np.abs(got[key] - delta).max() <= tolerance * scale, (dtype, key)


def test_bf16_bits_round_to_nearest_even_as_torch_does() -> None:
    import torch

    from tritonforge.builders.lora_trtllm import from_bf16_bits, to_bf16_bits

    values = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 3
    values[:4] = [0.0, -0.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8]  # exact ties: round to even
    torch_bits = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bf16_bits(values), torch_bits)
    assert np.array_equal(from_bf16_bits(torch_bits), torch.from_numpy(values).to(torch.bfloat16).float().numpy())


def test_the_conversion_cache_is_keyed_by_dtype(folders: Path, tmp_path: Path) -> None:
    from tritonforge.builders.lora import check_adapters, converted_for_trtllm

    spec = llm(folders, {"alpha": {"path": "adapters/alpha"}})
    (adapter,) = check_adapters(spec.adapters, folders / "decoder", source_dir=folders)
    paths = {d: converted_for_trtllm(adapter, dtype=d, cache_dir=tmp_path) for d in ("float16", "bfloat16", "float32")}
    folders_used = {d: p["model.lora_weights.npy"].parent for d, p in paths.items()}
    assert len(set(folders_used.values())) == 3
    for d, stored, _ in DTYPE_CASES:
        assert np.load(paths[d]["model.lora_weights.npy"]).dtype == stored


@pytest.mark.parametrize(
    ("dtype", "triton_type"), [("float16", "TYPE_FP16"), ("bfloat16", "TYPE_BF16"), ("float32", "TYPE_FP32")]
)
def test_gpu_lora_weights_travel_in_the_engines_dtype(folders: Path, dtype: str, triton_type: str) -> None:
    from tritonforge.config_io import model_config_pb2

    out = render(
        folders,
        {"alpha": {"path": "adapters/alpha"}},
        target="gpu",
        bls=True,
        runtime="engine",
        engine={"dtype": dtype, "lora": {"enabled": True, "max_rank": 8}},
    )
    name = model_config_pb2().DataType.Name
    trt, pre, ens = out.configs["tensorrt_llm"], out.configs["preprocessing"], out.configs["llm"]
    bls = next(c for n, c in out.configs.items() if n not in ("tensorrt_llm", "preprocessing", "postprocessing", "llm"))
    for config, side, tensor in (
        (trt, "input", "lora_weights"),
        (ens, "input", "lora_weights"),
        (bls, "input", "lora_weights"),
        (pre, "input", "LORA_WEIGHTS"),
        (pre, "output", "OUT_LORA_WEIGHTS"),
    ):
        types = {t.name: name(t.data_type) for t in getattr(config, side)}
        assert types[tensor] == triton_type, (config.name, tensor)
    shipped = np.load(out.files[f"preprocessing/1/lora/{task_id('alpha')}/model.lora_weights.npy"])
    assert shipped.dtype == dict((d, s) for d, s, _ in DTYPE_CASES)[dtype]
    assert any(f"({dtype}, the engine's dtype)" in n for n in out.notes)
    prefetch = trt.parameters["lora_prefetch_dir"].string_value if "lora_prefetch_dir" in trt.parameters else None
    # TensorRT-LLM's .npy reader has no bfloat16: a bf16 prefetch folder would fail the load
    assert prefetch == (None if dtype == "bfloat16" else "/models/tensorrt_llm/1/lora")


def test_an_adapters_task_id_is_its_names_in_every_build(folders: Path) -> None:
    """Ids 1..N over the sorted names renumbered the adapters when one was added: `release add` of a build with
    'legal' beside 'support' moved 'support' from 1 to 2, and requests for it were answered by 'legal' (operations
    audit). The id now follows the name alone."""
    one = json.loads(render(folders, {"support": {"path": "adapters/alpha"}}).files["preprocessing/1/adapters.json"])
    two = json.loads(render(folders, {"support": {"path": "adapters/alpha"}, "legal": {"path": "adapters/beta"}})
                     .files["preprocessing/1/adapters.json"])
    assert one["adapters"]["support"]["lora_task_id"] == two["adapters"]["support"]["lora_task_id"]
    assert two["adapters"]["legal"]["lora_task_id"] != two["adapters"]["support"]["lora_task_id"]
    assert all(0 < entry["lora_task_id"] < 2**31 for entry in two["adapters"].values())


def test_two_names_that_share_a_task_id_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonforge.builders import lora

    monkeypatch.setattr(lora, "task_id", lambda name: 7 if name in ("a", "b") else 8)
    with pytest.raises(BuildError, match=r"adapters 'a' and 'b' share a lora_task_id .*: rename one of them"):
        lora.task_ids(["b", "a", "c"])
