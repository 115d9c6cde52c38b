"""`tensorrt_llm_bls` (python_backends/llm_bls/model.py) outside Triton, over tests/fake_pb_utils.py.

The model's config is the one tritonforge renders (cpu and gpu sets, with and without adapters); the three step
models are fakes that record what they get. What each step receives is checked against the rendered `llm`
ensemble's own `ensemble_scheduling`, so the BLS model wires the steps exactly as the ensemble does.
Real-Triton tests: tests/integration/test_llm_bls.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_pb_utils as fpb
import numpy as np
import pytest

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "llm_bls" / "model.py"
EVICTED = "LoRA task {} not found in cache. Please send LoRA weights with request"
TOKENS = [10, 11, 12]
WAIT = 10.0


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora

    root = tmp_path_factory.mktemp("bls")
    make_tiny_decoder(root / "decoder")
    make_tiny_lora(root / "decoder", root / "adapters" / "alpha", 1)
    return root


SETS = {
    "cpu": ("cpu", {}),
    "cpu-adapters": ("cpu", {"adapters": {"alpha": {"path": "adapters/alpha"}}}),
    "gpu-adapters": ("gpu", {"adapters": {"alpha": {"path": "adapters/alpha"}},
                             "engine": {"lora": {"enabled": True, "max_rank": 8}}}),
    "prefixed": ("cpu", {"model_names": "prefixed"}),
}


def render(folders: Path, which: str, decoupled: bool = True) -> Any:
    from tritonforge.builders.llm import llm_model_set
    from tritonforge.spec import parse_spec

    target, extra = SETS[which]
    spec = parse_spec(
        {"name": "t", "target": target, "models": {"chat": {
            "kind": "llm", "checkpoint": "decoder", "max_input_len": 64, "max_seq_len": 128, "bls": True, "runtime": "engine",
            "tensorrt_llm": {"decoupled_mode": decoupled}, **extra}}},
        source_dir=folders,
    )
    return llm_model_set("chat", spec.models["chat"], target, folders / "decoder")


def config_json(config: Any) -> dict[str, Any]:
    """A ModelConfig as Triton hands it to a python model (`args["model_config"]`)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(config, preserving_proto_field_name=True)


def outputs_of(config: Any) -> set[str]:
    return {o.name for o in config.output}


# ------------------------------------------------------------------------------------------- the fake steps


class Steps:
    """preprocessing, tensorrt_llm and postprocessing stand-ins; every call is recorded as {input: array}."""

    def __init__(self, out: Any, names: tuple[str, str, str]) -> None:
        self.configs = {role: out.configs[name] for role, name in zip(("pre", "trt", "post"), names, strict=True)}
        self.names = names
        self.calls: dict[str, list[dict[str, np.ndarray]]] = {"pre": [], "trt": [], "post": []}
        self.ids: dict[str, list[str]] = {"pre": [], "trt": [], "post": []}
        self.lora_cache: set[int] = set()
        self.evicting = False  # tensorrt_llm forgets adapters (answers EVICTED unless weights come along)
        self.pre_error: str | None = None
        self.attach_weights = True  # preprocessing attaches an adapter's weights when asked to
        self.answers: list[dict[str, np.ndarray]] = []  # what preprocessing answered
        self.slow = False  # tensorrt_llm streams slowly until stopped
        self.stopped = threading.Event()

    def serve(self, module: Any) -> None:
        module.served.update(dict(zip(self.names, (self.pre, self.trt, self.post), strict=True)))

    def _record(self, role: str, request: Any) -> dict[str, np.ndarray]:
        inputs = {t.name(): t.as_numpy() for t in request.inputs()}
        # Triton refuses outputs a model does not declare, and inputs it does not declare
        assert set(request.requested_output_names) <= outputs_of(self.configs[role]), request.requested_output_names
        assert set(inputs) <= {i.name for i in self.configs[role].input}, set(inputs)
        self.calls[role].append(inputs)
        self.ids[role].append(request.request_id())
        return inputs

    @staticmethod
    def _response(outputs: dict[str, np.ndarray], requested: list[str]) -> fpb.InferenceResponse:
        return fpb.InferenceResponse([fpb.Tensor(k, v) for k, v in outputs.items() if k in requested])

    def pre(self, request: Any) -> fpb.InferenceResponse:
        inputs = self._record("pre", request)
        if self.pre_error:
            return fpb.InferenceResponse(error=fpb.TritonError(self.pre_error, fpb.TritonError.INVALID_ARG))
        out = {
            "INPUT_ID": np.array([[1, 2, 3]], np.int32), "REQUEST_INPUT_LEN": np.array([[3]], np.int32),
            "DECODER_INPUT_ID": np.array([[0]], np.int32), "REQUEST_DECODER_INPUT_LEN": np.array([[1]], np.int32),
            "REQUEST_OUTPUT_LEN": inputs["REQUEST_OUTPUT_LEN"], "BAD_WORDS_IDS": np.zeros((1, 2, 1), np.int32) + 7,
            "STOP_WORDS_IDS": np.zeros((1, 2, 1), np.int32) + 8, "EMBEDDING_BIAS": np.zeros((1, 0), np.float32),
            "OUT_END_ID": np.array([[2]], np.int32), "OUT_PAD_ID": np.array([[0]], np.int32),
        }
        if "lora_name" in inputs:
            out["OUT_LORA_TASK_ID"] = np.array([[1]], np.uint64)
        if self.attach_weights and "lora_send_weights" in inputs and inputs["lora_send_weights"].any():
            out["OUT_LORA_WEIGHTS"] = np.ones((1, 2, 4), np.float16)
            out["OUT_LORA_CONFIG"] = np.ones((1, 2, 3), np.int32)
        self.answers.append({k: v for k, v in out.items() if k in request.requested_output_names})
        return self._response(out, request.requested_output_names)

    def trt(self, request: Any) -> Iterator[fpb.InferenceResponse]:
        inputs = self._record("trt", request)
        if "stop" in inputs:
            self.stopped.set()
            return iter([])
        task = int(inputs["lora_task_id"].reshape(-1)[0]) if "lora_task_id" in inputs else None
        if task is not None and self.evicting:
            if "lora_weights" in inputs:
                self.lora_cache.add(task)
            elif task not in self.lora_cache:
                return iter([fpb.InferenceResponse(error=fpb.TritonError(EVICTED.format(task)))])
        streaming = "streaming" in inputs and bool(inputs["streaming"].any())
        return self._generate(streaming, request.requested_output_names)

    def _generate(self, streaming: bool, requested: list[str]) -> Iterator[fpb.InferenceResponse]:
        pieces = [[t] for t in TOKENS] if streaming else [TOKENS]
        for tokens in pieces:
            if self.slow and self.stopped.wait(0.3):
                return  # the engine ends a stopped request
            yield self._response({
                "output_ids": np.array([[tokens]], np.int32),
                "sequence_length": np.array([[len(tokens)]], np.int32),
                "cum_log_probs": np.array([[-1.5]], np.float32),
            }, requested)

    def post(self, request: Any) -> fpb.InferenceResponse:
        inputs = self._record("post", request)
        tokens, lengths = inputs["TOKENS_BATCH"], inputs["SEQUENCE_LENGTH"]
        texts = [" ".join(f"t{t}" for t in tokens[0, beam, : lengths[0, beam]]).encode()
                 for beam in range(tokens.shape[1])]
        return fpb.InferenceResponse([fpb.Tensor("OUTPUT", np.array(texts, dtype=object))])


def start(monkeypatch: pytest.MonkeyPatch, out: Any, **params: str) -> tuple[Any, Steps]:
    """The BLS model of a rendered set, initialized with its config, and its steps served by fakes."""
    import sys

    module = fpb.load_model(MODEL_PY, monkeypatch)

    def having(name: str, where: str = "input") -> str:
        return next(c.name for c in out.configs.values() if name in {t.name for t in getattr(c, where)}
                    and not c.HasField("ensemble_scheduling"))

    steps = Steps(out, (having("QUERY"), having("input_ids"), having("TOKENS_BATCH")))
    steps.serve(sys.modules[fpb.MODULE_NAME])
    name = next(c.name for c in out.configs.values() if "tensorrt_llm_model_name" in c.parameters)
    config = config_json(out.configs[name])
    for key, value in params.items():
        config["parameters"][key] = {"string_value": value}
    model = module.TritonPythonModel()
    model.initialize(fpb.initialize_args(config, Path("/nonexistent") / name))
    return model, steps


def run(model: Any, request: fpb.DecoupledRequest) -> list[Any]:
    assert model.execute([request]) is None
    assert request.sender.final.wait(WAIT), "no FINAL"
    assert not request.sender.errors, request.sender.errors
    flags = request.sender.flags
    assert flags[-1] & fpb.TRITONSERVER_RESPONSE_COMPLETE_FINAL and not any(f & 1 for f in flags[:-1])
    return [r for r in request.sender.responses if r is not None]


def text(response: Any) -> str:
    assert not response.has_error(), response.error().message()
    return "".join(t.decode() for t in fpb.get_output_tensor_by_name(response, "text_output").as_numpy().reshape(-1))


def basic(**extra: np.ndarray) -> fpb.DecoupledRequest:
    return fpb.DecoupledRequest("client-7", text_input=fpb.strings([["hi"]]),
                                max_tokens=np.array([[3]], np.int32), **extra)


# ------------------------------------------------------------------------------------------------ the wiring


def every_input(ensemble: Any, bls: Any) -> dict[str, np.ndarray]:
    """A value for every input the BLS model shares with the ensemble, each one different; shaped as a python
    model receives it (`reshape: []` inputs lose their [1])."""
    reshaped = {i.name for i in bls.input if i.HasField("reshape") and not list(i.reshape.shape)}
    numpy = {"TYPE_STRING": object, "TYPE_BOOL": bool, "TYPE_INT32": np.int32, "TYPE_UINT64": np.uint64,
             "TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64}
    from tritonforge.config_io import model_config_pb2

    pb = model_config_pb2()
    values: dict[str, np.ndarray] = {}
    for k, spec in enumerate(ensemble.input, start=1):
        dtype = numpy[pb.DataType.Name(spec.data_type)]
        shape = (1,) if spec.name in reshaped else (1, *[1 if d == -1 else d for d in spec.dims])
        if dtype is object:
            value = fpb.strings(np.full(shape, "alpha" if spec.name == "lora_name" else f"v-{spec.name}"))
        elif dtype is bool:
            value = np.zeros(shape, bool)  # stream false, lora_send_weights false, return_* false
        else:
            value = np.full(shape, k, dtype)
        values[spec.name] = value
    return values


@pytest.mark.parametrize("which", ["cpu", "cpu-adapters", "gpu-adapters"])
def test_each_step_gets_what_the_ensemble_would_give_it(folders: Path, monkeypatch: pytest.MonkeyPatch,
                                                        which: str) -> None:
    out = render(folders, which)
    model, steps = start(monkeypatch, out)
    ensemble, bls = out.configs["llm"], out.configs["tensorrt_llm_bls"]
    assert {i.name for i in ensemble.input} <= {i.name for i in bls.input}  # tritonforge's additions too
    sent = every_input(ensemble, bls)
    (response,) = run(model, fpb.DecoupledRequest("r1", **sent))
    assert text(response) == "t10 t11 t12"
    assert fpb.get_output_tensor_by_name(response, "cum_log_probs").as_numpy().tolist() == [[-1.5]]

    wiring = {s.model_name: s for s in ensemble.ensemble_scheduling.step}
    ((pre,), (trt,), (post,)) = steps.calls["pre"], steps.calls["trt"], steps.calls["post"]
    expected_pre = {name: sent[t] for name, t in wiring["preprocessing"].input_map.items() if t in sent}
    assert set(pre) == set(expected_pre)
    for name, value in expected_pre.items():
        assert pre[name].ndim >= 2 and np.array_equal(pre[name].reshape(-1), value.reshape(-1)), name
    (answered,) = steps.answers
    produced = {wiring["preprocessing"].output_map[name]: value for name, value in answered.items()}
    expected_trt = {}
    for name, tensor in wiring["tensorrt_llm"].input_map.items():
        if tensor in sent:
            expected_trt[name] = sent[tensor]
        elif tensor in produced:
            expected_trt[name] = produced[tensor]
    assert set(trt) == set(expected_trt)
    for name, value in expected_trt.items():
        assert trt[name].ndim >= 2 and np.array_equal(trt[name].reshape(-1), value.reshape(-1)), name
    assert post["TOKENS_BATCH"].tolist() == [[TOKENS]] and post["SEQUENCE_LENGTH"].tolist() == [[3]]
    assert steps.ids["trt"] == ["r1"]  # the client's id: its own `stop` to tensorrt_llm still works
    assert steps.ids["post"] == [""]  # not streamed: decoded at once


def test_the_step_names_follow_a_prefixed_set(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(folders, "prefixed")
    assert "chat_bls" in out.configs and "preprocessing_model_name" not in out.configs["chat_bls"].parameters
    model, steps = start(monkeypatch, out)
    (response,) = run(model, basic())
    assert text(response) == "t10 t11 t12"
    assert [len(steps.calls[r]) for r in ("pre", "trt", "post")] == [1, 1, 1]


# ------------------------------------------------------------------------------------------------ streaming


def test_streaming_sends_each_piece_decoded_in_its_streams_context(folders: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "cpu"))
    responses = run(model, basic(stream=np.array([[True]])))
    assert [text(r) for r in responses] == ["t10", "t11", "t12"]
    assert bool(steps.calls["trt"][0]["streaming"].all())
    keys = set(steps.ids["post"])
    assert len(keys) == 1 and "" not in keys  # one postprocessing stream state for this request
    run(model, basic(stream=np.array([[True]])))
    assert len(set(steps.ids["post"][3:])) == 1 and set(steps.ids["post"][3:]) != keys  # a new stream


def test_accumulate_tokens_sends_all_the_text_so_far(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "cpu"), accumulate_tokens="true")
    responses = run(model, basic(stream=np.array([[True]])))
    assert [text(r) for r in responses] == ["t10", "t10 t11", "t10 t11 t12"]
    assert steps.ids["post"] == ["", "", ""]


# ------------------------------------------------------------------------------------------------ LoRA eviction


def test_an_evicted_adapter_is_resent_once_with_its_weights(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "gpu-adapters"))
    steps.evicting = True
    (response,) = run(model, basic(lora_name=fpb.strings([["alpha"]])))
    assert text(response) == "t10 t11 t12"
    first, second = steps.calls["pre"]
    assert "lora_send_weights" not in first and second["lora_send_weights"].tolist() == [[True]]
    assert "lora_weights" not in steps.calls["trt"][0] and "lora_weights" in steps.calls["trt"][1]
    # cached now: no resend
    (response,) = run(model, basic(lora_name=fpb.strings([["alpha"]])))
    assert text(response) == "t10 t11 t12" and len(steps.calls["pre"]) == 3


def test_eviction_is_retried_once_only(folders: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "gpu-adapters"))
    steps.evicting = True
    steps.attach_weights = False  # the resend does not help: the second eviction goes to the client
    (response,) = run(model, basic(lora_name=fpb.strings([["alpha"]])))
    assert response.has_error() and "LoRA task 1 not found in cache" in response.error().message()
    assert len(steps.calls["trt"]) == 2


def test_without_weights_to_resend_the_eviction_error_is_passed_on(folders: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "cpu-adapters"))  # no lora_send_weights on cpu
    steps.evicting = True
    (response,) = run(model, basic(lora_name=fpb.strings([["alpha"]])))
    assert response.has_error() and "not found in cache" in response.error().message()
    assert len(steps.calls["trt"]) == 1


# ------------------------------------------------------------------------------------------------ errors, cancel


def test_errors_go_to_their_request_and_the_model_keeps_serving(folders: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "cpu"))
    steps.pre_error = "unknown adapter 'gamma' (lora_name): known adapters are none"
    (response,) = run(model, basic())
    assert response.has_error() and "unknown adapter 'gamma'" in response.error().message()
    assert response.error().code() == fpb.TritonError.INVALID_ARG
    assert steps.calls["trt"] == []
    steps.pre_error = None
    (response,) = run(model, fpb.DecoupledRequest("x", max_tokens=np.array([[3]], np.int32)))
    assert response.has_error() and "'text_input'" in response.error().message()
    (response,) = run(model, basic(num_draft_tokens=np.array([[4]], np.int32)))
    assert response.has_error() and "speculative decoding" in response.error().message()
    (response,) = run(model, basic())
    assert text(response) == "t10 t11 t12"


def test_a_cancelled_request_stops_the_engine_with_its_request_id(folders: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model, steps = start(monkeypatch, render(folders, "cpu"))
    steps.slow = True
    request = basic(stream=np.array([[True]]))
    assert model.execute([request]) is None
    deadline = time.monotonic() + WAIT
    while not request.sender.responses and time.monotonic() < deadline:
        time.sleep(0.01)
    request.sender.cancelled = True
    assert steps.stopped.wait(WAIT), "no stop reached tensorrt_llm"
    assert request.sender.final.wait(WAIT)
    stop = steps.calls["trt"][-1]
    assert stop["stop"].tolist() == [[True]] and steps.ids["trt"] == ["client-7", "client-7"]
    last = request.sender.responses[-1]
    assert last.has_error() and last.error().code() == fpb.TritonError.CANCELLED
    assert len([r for r in request.sender.responses if r is not None and not r.has_error()]) < len(TOKENS)


def test_not_decoupled_answers_from_execute_and_refuses_streaming(folders: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = start(monkeypatch, render(folders, "cpu", decoupled=False))
    (response,) = model.execute([basic()])
    assert text(response) == "t10 t11 t12"
    (response,) = model.execute([basic(stream=np.array([[True]]))])
    assert response.has_error() and "decoupled_mode" in response.error().message()


def test_step_names_off_the_pattern_are_written_into_the_config() -> None:
    from tritonforge.builders.llm_gpu import LLMNames, gpu_llm_model_set
    from tritonforge.trtllm.params import BLSParams

    names = LLMNames(preprocessing="tok", tensorrt_llm="engine", postprocessing="detok", bls="bls")
    out = gpu_llm_model_set(names, engine_dir_in_container="/e", tokenizer_files={"tokenizer.json": b"{}"},
                            bls=BLSParams())
    params = out.configs["bls"].parameters
    assert params["tensorrt_llm_model_name"].string_value == "engine"
    assert params["preprocessing_model_name"].string_value == "tok"
    assert params["postprocessing_model_name"].string_value == "detok"
    assert "bls/1/model.py" in out.files and not any("no model.py shipped" in n for n in out.notes)


def test_a_closed_request_is_never_probed_for_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancellation watcher probes `is_cancelled()` from its own thread while the request's thread sends FINAL.
    After FINAL, Triton has deleted the response factory and a probe crashed Triton 2.51 in CI (SIGSEGV in
    TRITONBACKEND_ResponseFactoryIsCancelled): probes and FINAL are serialized, and a closed job is not probed."""
    module = fpb.load_model(MODEL_PY, monkeypatch)
    for _ in range(200):
        request = fpb.DecoupledRequest("r")
        job = module._Job(request, request.sender, "r")
        stop = threading.Event()

        def watch(job: Any = job, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                job.is_cancelled()

        watcher = threading.Thread(target=watch)
        watcher.start()
        job.send(final=True)
        time.sleep(0.001)  # the watcher keeps probing after FINAL
        stop.set()
        watcher.join()
        assert request.sender.late_probes == 0
        assert job.is_cancelled() is False and request.sender.late_probes == 0
