"""python_backends/trtllm_llmapi: the gpu LLM API driver, run against a stand-in of `tensorrt_llm` (no GPU here).

The stand-in (``FakeLLM``) keeps the LLM API's surface that the model uses — ``LLM(**model.yaml args)``,
``generate_async(prompt, sampling_params=, lora_request=, streaming=)`` returning a result that is async-iterable
(streaming), has ``aresult()`` and ``abort()``, ``SamplingParams(**kwargs)``, ``LoRARequest(name, id, path, ...)`` —
and "generates" the prompt's words back, so what is checked is the model's own mapping of tensors and responses.
It is labelled a stand-in: TensorRT-LLM itself needs a GPU and is tested only with the `gpu` marker.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from tests.fake_pb_utils import DecoupledRequest, initialize_args, load_model, strings

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "trtllm_llmapi" / "model.py"


@dataclass
class Output:
    text: str
    text_diff: str
    finish_reason: str | None = None
    stop_reason: str | None = None
    cumulative_logprob: float | None = None


@dataclass
class Result:
    outputs: list[Output]
    finished: bool


class Generation:
    def __init__(self, words: list[str], streaming: bool) -> None:
        self.words, self.streaming, self.aborted = words, streaming, False

    def __aiter__(self) -> Any:
        async def gen() -> Any:
            text = ""
            for i, w in enumerate(self.words):
                if self.aborted:
                    return
                text += w
                done = i == len(self.words) - 1
                yield Result([Output(text, w, "length" if done else None)], done)
                await asyncio.sleep(0)

        return gen()

    async def aresult(self) -> Result:
        return Result([Output("".join(self.words), "", "length", None, -1.5)], True)

    def abort(self) -> None:
        self.aborted = True


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs, self.calls = kwargs, []
        FakeLLM.instances.append(self)

    def generate_async(self, prompt: str, sampling_params: Any, lora_request: Any, streaming: bool) -> Generation:
        self.calls.append((prompt, sampling_params, lora_request, streaming))
        return Generation([f" {w}" for w in prompt.split()][: sampling_params.kwargs.get("max_tokens", 32)], streaming)

    def shutdown(self) -> None:
        pass


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        if "temperature" in kwargs and kwargs["temperature"] < 0:
            raise ValueError("temperature must be >= 0")
        self.kwargs = kwargs


class LoRARequest:
    def __init__(self, name: str, lora_id: int, path: str, lora_ckpt_source: str = "hf") -> None:
        self.args = (name, lora_id, path, lora_ckpt_source)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    trt = types.ModuleType("tensorrt_llm")
    trt.LLM, trt.SamplingParams = FakeLLM, SamplingParams  # type: ignore[attr-defined]
    executor, request = types.ModuleType("tensorrt_llm.executor"), types.ModuleType("tensorrt_llm.executor.request")
    request.LoRARequest = LoRARequest  # type: ignore[attr-defined]
    for name, module in (("tensorrt_llm", trt), ("tensorrt_llm.executor", executor),
                         ("tensorrt_llm.executor.request", request)):
        monkeypatch.setitem(sys.modules, name, module)
    version = tmp_path / "1"
    (version / "checkpoint").mkdir(parents=True)
    (version / "adapters" / "support").mkdir(parents=True)
    (version / "model.yaml").write_text(
        "model: checkpoint\nbackend: pytorch\ntensor_parallel_size: 1\n"
        "triton_config: {max_batch_size: 8, decoupled: true, cancellation_check_period_ms: 10}\n"
    )
    module = load_model(MODEL_PY, monkeypatch)
    m = module.TritonPythonModel()
    m.initialize(initialize_args({"name": "tensorrt_llm", "max_batch_size": 8,
                                  "model_transaction_policy": {"decoupled": True}}, tmp_path))
    yield m
    m.finalize()


def run(m: Any, **inputs: np.ndarray) -> list[Any]:
    request = DecoupledRequest("r1", **inputs)
    m.execute([request])
    assert request.sender.final.wait(5)
    return request.sender.responses


def texts(responses: list[Any]) -> list[str]:
    out = []
    for r in responses:
        if r is None:
            continue
        assert not r.has_error(), r.error().message()
        t = {x.name(): x.as_numpy() for x in r.output_tensors()}
        out.append(t["text_output"].reshape(-1)[0].decode())
    return out


def test_model_yaml_becomes_the_llm_arguments_with_the_checkpoint_resolved(model: Any, tmp_path: Path) -> None:
    args = FakeLLM.instances[-1].kwargs
    assert args["model"] == str(tmp_path / "1" / "checkpoint") and "triton_config" not in args
    assert args["backend"] == "pytorch"


def test_sampling_inputs_map_by_name_and_the_completion_is_returned(model: Any) -> None:
    responses = run(model, text_input=strings([["a b c"]]), sampling_param_max_tokens=np.array([[2]], np.int32),
                    sampling_param_temperature=np.array([[0.5]], np.float32),
                    sampling_param_stop=strings([["x", "y"]]), return_finish_reason=np.array([[True]]))
    assert texts(responses) == [" a b"]
    _, params, lora, streaming = FakeLLM.instances[-1].calls[-1]
    assert params.kwargs == {"max_tokens": 2, "temperature": 0.5, "exclude_input_from_output": True,
                             "stop": ["x", "y"]}
    assert lora is None and streaming is False
    reason = {x.name(): x.as_numpy() for x in responses[-1].output_tensors()}["finish_reason"]
    assert reason.reshape(-1)[0] == b"length"
    logprob = run(model, text_input=strings([["a b"]]), return_cumulative_logprob=np.array([[True]]))[-1]
    value = {x.name(): x.as_numpy() for x in logprob.output_tensors()}["cumulative_logprob"]
    assert value.dtype == np.float32 and value.reshape(-1)[0] == np.float32(-1.5)  # FP32, as the config declares
    # asked for, so that the PyTorch backend computes them (else the value is always NaN)
    assert FakeLLM.instances[-1].calls[-1][1].kwargs["logprobs"] == 1


def test_streaming_sends_the_new_text_of_each_step(model: Any) -> None:
    responses = run(model, text_input=strings([["one two three"]]), streaming=np.array([[True]]))
    assert texts(responses) == [" one", " two", " three"]


def test_lora_needs_all_three_and_an_empty_name_is_the_base_model(model: Any) -> None:
    base = run(model, text_input=strings([["a"]]), lora_name=strings([[""]]))
    assert texts(base) == [" a"] and FakeLLM.instances[-1].calls[-1][2] is None
    run(model, text_input=strings([["a"]]), lora_name=strings([["support"]]),
        lora_id=np.array([[3]], np.uint64), lora_path=strings([["adapters/support"]]))
    lora = FakeLLM.instances[-1].calls[-1][2]
    assert lora.args[:2] == ("support", 3) and lora.args[2].endswith("1/adapters/support")
    bad = run(model, text_input=strings([["a"]]), lora_name=strings([["support"]]))
    assert "must all be provided together" in bad[-1].error().message()
    missing = run(model, text_input=strings([["a"]]), lora_name=strings([["x"]]), lora_id=np.array([[1]], np.uint64),
                  lora_path=strings([["nowhere"]]))
    assert "does not exist on the server" in missing[-1].error().message()


def test_bad_sampling_parameters_are_the_requests_error_and_the_model_keeps_serving(model: Any) -> None:
    bad = run(model, text_input=strings([["a"]]), sampling_param_temperature=np.array([[-1.0]], np.float32))
    assert "bad sampling parameters" in bad[-1].error().message()
    assert texts(run(model, text_input=strings([["fine"]]))) == [" fine"]


def test_a_named_logits_post_processor_is_refused_not_ignored(model: Any) -> None:
    """Declared by upstream's contract, and upstream loads the processors model.yaml names; this model loads none,
    so a request naming one was decoded without it, silently."""
    named = run(model, text_input=strings([["a"]]), sampling_param_logits_post_processor_name=strings([["mine"]]))
    assert "sampling_param_logits_post_processor_name 'mine': this model loads no logits post-processors" in (
        named[-1].error().message())
    empty = run(model, text_input=strings([["fine"]]), sampling_param_logits_post_processor_name=strings([[""]]))
    assert texts(empty) == [" fine"]


class FakeMetricFamily:
    """pb_utils.MetricFamily's surface the model uses (Triton's custom metrics)."""

    GAUGE = "gauge"
    families: ClassVar[list[FakeMetricFamily]] = []

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind, self.metrics = name, kind, []
        FakeMetricFamily.families.append(self)

    def Metric(self, labels: dict[str, str]) -> Any:  # pb_utils' name
        family = self

        class Gauge:
            def __init__(self) -> None:
                self.labels, self.value, self.history = labels, None, []
                family.metrics.append(self)

            def set(self, value: float) -> None:
                self.value = value
                self.history.append(value)

        return Gauge()


def test_the_llms_queue_is_published_as_tensorrt_llms_request_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The model takes every request at once: Triton's queue time stayed near zero while requests waited in the
    LLM's queue, and the autoscaler never saw them (k8s audit). With enable_iter_perf_stats (model.yaml, on by
    default) the LLM API's iteration statistics become nv_trt_llm_request_metrics, as the engine path publishes."""
    import time

    stats = [json.dumps({"numQueuedRequests": 5, "numActiveRequests": 8, "maxNumActiveRequests": 8,
                         "inflightBatchingStats": {"numPausedRequests": 1, "numScheduledRequests": 7}})]

    class StatsLLM(FakeLLM):
        def get_stats_async(self, timeout: float) -> Any:
            async def gen() -> Any:
                while stats:
                    yield stats.pop(0)

            return gen()

    trt = types.ModuleType("tensorrt_llm")
    trt.LLM, trt.SamplingParams = StatsLLM, SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", trt)
    version = tmp_path / "1"
    (version / "checkpoint").mkdir(parents=True)
    (version / "model.yaml").write_text(
        "model: checkpoint\nbackend: pytorch\nenable_iter_perf_stats: true\n"
        "triton_config: {max_batch_size: 8, decoupled: true}\n"
    )
    module = load_model(MODEL_PY, monkeypatch)
    monkeypatch.setattr(module.pb_utils, "MetricFamily", FakeMetricFamily, raising=False)
    monkeypatch.setattr(module, "STATS_PERIOD_S", 0.02)
    m = module.TritonPythonModel()
    m.initialize(initialize_args({"name": "chat_tensorrt_llm", "max_batch_size": 8,
                                  "model_transaction_policy": {"decoupled": True}}, tmp_path))
    try:
        assert StatsLLM.instances[-1].kwargs["enable_iter_perf_stats"] is True
        family = FakeMetricFamily.families[-1]
        assert family.name == "nv_trt_llm_request_metrics" and family.kind == "gauge"
        time.sleep(0.2)  # nothing is read before the first request (TensorRT-LLM logs "not available yet" then)
        assert stats and all(g.value is None for g in family.metrics)
        run(m, text_input=strings([["a b"]]))
        deadline = time.monotonic() + 5
        while any(g.value is None for g in family.metrics):
            assert time.monotonic() < deadline, "no statistics were published"
            time.sleep(0.01)
        published = {g.labels["request_type"]: g.history[0] for g in family.metrics}
        assert published == {"waiting": 6, "active": 8, "scheduled": 7, "max": 8}  # queued + paused wait
        assert {g.labels["model"] for g in family.metrics} == {"chat_tensorrt_llm"}
        # idle: reads bring no statistics, and the gauges go back to 0 (they kept the last busy values)
        deadline = time.monotonic() + 5
        while {g.labels["request_type"]: g.value for g in family.metrics}["active"] != 0:
            assert time.monotonic() < deadline, "the gauges kept the last busy values"
            time.sleep(0.01)
    finally:
        m.finalize()
    assert m.stats.cancelled() or m.stats.done()


class RefusingLLM(FakeLLM):
    """generate_async refuses a prompt of "long" as TensorRT-LLM's _check_arguments does (synchronously)."""

    def generate_async(self, prompt: str, sampling_params: Any, lora_request: Any, streaming: bool) -> Generation:
        if "long" in prompt:
            raise ValueError("The sum of prompt length (9000), query length (0) should not exceed max_num_tokens (8192)")
        generation = super().generate_async(prompt, sampling_params, lora_request, streaming)
        self.handles = [*getattr(self, "handles", []), generation]
        return generation


def _model_with(llm: type, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, decoupled: bool = True,
                period_ms: int = 10) -> Any:
    trt = types.ModuleType("tensorrt_llm")
    trt.LLM, trt.SamplingParams = llm, SamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt_llm", trt)
    version = tmp_path / "1"
    (version / "checkpoint").mkdir(parents=True, exist_ok=True)
    (version / "model.yaml").write_text(
        "model: checkpoint\nbackend: pytorch\n"
        f"triton_config: {{max_batch_size: 8, decoupled: {str(decoupled).lower()}, "
        f"cancellation_check_period_ms: {period_ms}}}\n"
    )
    module = load_model(MODEL_PY, monkeypatch)
    m = module.TritonPythonModel()
    m.initialize(initialize_args({"name": "tensorrt_llm", "max_batch_size": 8,
                                  "model_transaction_policy": {"decoupled": decoupled}}, tmp_path))
    return m


def test_a_prompt_the_llm_refuses_is_answered_and_the_batch_before_it_aborted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """generate_async raises at once for a prompt over max_num_tokens; it raised inside an unread future, so a
    decoupled client never got a response and the prompts of its batch already submitted generated for nobody."""
    from tritonforge.triton.errors import classify_reply

    m = _model_with(RefusingLLM, monkeypatch, tmp_path)
    try:
        responses = run(m, text_input=strings([["fine"], ["long prompt"]]))
        error = responses[-1].error()
        assert error.code() == m_code(m, "INVALID_ARG") and "max_num_tokens (8192)" in error.message()
        assert type(classify_reply("INVALID_ARG", error.message(), model="m", url="u", timeout=None)).__name__ == (
            "ContextLengthError")
        assert [h.aborted for h in RefusingLLM.instances[-1].handles] == [True]  # "fine" was submitted, then aborted
        assert texts(run(m, text_input=strings([["still serving"]]))) == [" still serving"]
    finally:
        m.finalize()


def wait_until(done: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def m_code(m: Any, name: str) -> int:
    return int(getattr(sys.modules["triton_python_backend_utils"].TritonError, name))


def test_requests_of_one_execute_are_submitted_together_when_not_decoupled(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without decoupled, execute waited for each request's result before submitting the next: the LLM never
    batched two requests of one execute. Each generation here finishes only once both were submitted."""
    both = threading.Event()

    class PairLLM(FakeLLM):
        def generate_async(self, prompt: str, sampling_params: Any, lora_request: Any, streaming: bool) -> Any:
            generation = super().generate_async(prompt, sampling_params, lora_request, streaming)
            if len(self.calls) == 2:
                both.set()
            inner = generation.aresult

            async def aresult() -> Result:
                for _ in range(200):
                    if both.is_set():
                        return await inner()
                    await asyncio.sleep(0.01)
                raise RuntimeError("the second request was not submitted while the first ran")

            generation.aresult = aresult  # type: ignore[method-assign]
            return generation

    m = _model_with(PairLLM, monkeypatch, tmp_path, decoupled=False)
    try:
        from tests.fake_pb_utils import Request

        out = m.execute([Request(text_input=strings([["one"]])), Request(text_input=strings([["two"]]))])
        assert texts(out) == [" one", " two"]
    finally:
        m.finalize()


def test_a_cancelled_request_is_aborted_by_the_one_cancellation_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Cancellation is polled on a thread of its own (not a watcher per request on the LLM's loop), and a request
    is never asked after its FINAL (Triton 2.51 can crash on is_cancelled() then)."""

    class EndlessGeneration(Generation):
        def __aiter__(self) -> Any:
            async def gen() -> Any:
                while not self.aborted:
                    yield Result([Output("x", "x")], False)
                    await asyncio.sleep(0.005)

            return gen()

    class EndlessLLM(FakeLLM):
        def generate_async(self, prompt: str, sampling_params: Any, lora_request: Any, streaming: bool) -> Any:
            self.calls.append(prompt)
            self.generation = EndlessGeneration([], streaming)
            return self.generation

    m = _model_with(EndlessLLM, monkeypatch, tmp_path)
    try:
        request = DecoupledRequest("r9", text_input=strings([["go"]]), streaming=np.array([[True]]))
        m.execute([request])
        deadline = time.monotonic() + 5
        while len(request.sender.responses) < 3:
            assert time.monotonic() < deadline, "no tokens streamed"
            time.sleep(0.01)
        request.sender.cancelled = True
        assert request.sender.final.wait(5), "the cancelled stream was never finished"
        assert request.sender.responses[-1].error().code() == m_code(m, "CANCELLED")
        wait_until(lambda: EndlessLLM.instances[-1].generation.aborted)
        time.sleep(0.05)  # cancellation periods after FINAL
        assert request.sender.late_probes == 0 and request.sender.errors == []
        assert [t.name for t in threading.enumerate() if t.name == "llmapi-cancel"] == ["llmapi-cancel"]
    finally:
        m.finalize()
    assert not m.watching.is_alive() and not m.sending.is_alive()


def test_attention_data_parallel_rows_of_one_iteration_are_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With attention data parallelism each rank reports its own row of an iteration: the last rank's row
    overwrote the others (rank 0's queue lost)."""
    module = load_model(MODEL_PY, monkeypatch)
    monkeypatch.setattr(module.pb_utils, "MetricFamily", FakeMetricFamily, raising=False)
    backlog = module.Backlog("m", 1)
    family = FakeMetricFamily.families[-1]
    for rank in range(2):
        backlog.publish({"iter": 7, "numQueuedRequests": 4 if rank == 0 else 0, "numActiveRequests": 3,
                         "maxNumActiveRequests": 8, "inflightBatchingStats": {"numPausedRequests": rank,
                                                                              "numScheduledRequests": 2}})
        if rank == 0:  # one rank's part of the iteration is never published (a scrape would see it)
            assert all(g.value is None for g in family.metrics)
    backlog.publish(json.dumps({"iter": 8, "numQueuedRequests": 1, "numActiveRequests": 1, "maxNumActiveRequests": 8}))
    gauges = {g.labels["request_type"]: g.value for g in family.metrics}
    assert gauges == {"waiting": 5, "active": 6, "scheduled": 4, "max": 16}  # iteration 7, complete
    backlog.flush()  # the end of a read: iteration 8 is complete
    assert {g.labels["request_type"]: g.value for g in family.metrics} == {
        "waiting": 1, "active": 1, "scheduled": 1, "max": 8}


def test_a_stop_answers_the_running_request_even_if_its_generation_never_ends(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Upstream's stop answers the running request CANCELLED at once (handle_stop_request): waiting for the aborted
    iterator's own end left a streaming client waiting whenever the LLM did not end it. Nothing is sent after."""

    class DeafGeneration(Generation):
        def __aiter__(self) -> Any:
            async def gen() -> Any:
                while True:  # ignores abort(): the stop must not depend on it
                    yield Result([Output("x", "x")], False)
                    await asyncio.sleep(0.005)

            return gen()

    class DeafLLM(FakeLLM):
        def generate_async(self, prompt: str, sampling_params: Any, lora_request: Any, streaming: bool) -> Any:
            self.generation = DeafGeneration([], streaming)
            return self.generation

    m = _model_with(DeafLLM, monkeypatch, tmp_path)
    try:
        running = DecoupledRequest("chat-1", text_input=strings([["go"]]), streaming=np.array([[True]]))
        m.execute([running])
        deadline = time.monotonic() + 5
        while len(running.sender.responses) < 2:
            assert time.monotonic() < deadline, "no tokens streamed"
            time.sleep(0.01)
        stop = DecoupledRequest("chat-1", text_input=strings([[""]]), stop=np.array([[True]]))
        m.execute([stop])
        assert stop.sender.final.wait(5) and not stop.sender.responses[-1].has_error()
        assert running.sender.final.wait(5), "the stopped request was never answered"
        assert running.sender.responses[-1].error().code() == m_code(m, "CANCELLED")
        wait_until(lambda: DeafLLM.instances[-1].generation.aborted)
        time.sleep(0.05)  # the generation keeps yielding: nothing reaches the closed request
        assert running.sender.errors == [] and running.sender.late_probes == 0
    finally:
        m.finalize()


def test_no_request_is_asked_is_cancelled_after_its_final_response(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Triton 2.51 can crash on is_cancelled() for a request it has released: the cancellation thread sweeping every
    millisecond over many short streams never asks one whose FINAL was queued (the fake counts such probes)."""
    m = _model_with(FakeLLM, monkeypatch, tmp_path, period_ms=1)
    try:
        requests = [DecoupledRequest(f"r{i}", text_input=strings([["a b c d"]]), streaming=np.array([[True]]))
                    for i in range(60)]
        for request in requests:
            m.execute([request])
        for request in requests:
            assert request.sender.final.wait(5)
        time.sleep(0.02)  # sweeps after the last FINAL
        assert sum(r.sender.late_probes for r in requests) == 0
        assert all(r.sender.errors == [] for r in requests)
        assert [texts(r.sender.responses) for r in requests[:1]] == [[" a", " b", " c", " d"]]
    finally:
        m.finalize()


def test_a_cancelled_request_that_is_not_decoupled_gets_cancelled_not_partial_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without decoupled, execute answers; an aborted generation may end normally with the text so far: the
    client that cancelled must not be answered as if it had succeeded."""

    class SlowGeneration(Generation):
        async def aresult(self) -> Result:
            while not self.aborted:
                await asyncio.sleep(0.005)
            return Result([Output("partial", "", "cancelled")], True)

    class SlowLLM(FakeLLM):
        def generate_async(self, prompt: str, sampling_params: Any, lora_request: Any, streaming: bool) -> Any:
            return SlowGeneration([], streaming)

    m = _model_with(SlowLLM, monkeypatch, tmp_path, decoupled=False)
    try:
        request = DecoupledRequest("r5", text_input=strings([["go"]]))
        threading.Timer(0.1, lambda: setattr(request.sender, "cancelled", True)).start()
        (answer,) = m.execute([request])
        assert answer.has_error() and answer.error().code() == m_code(m, "CANCELLED")
        assert request.sender.responses == []  # answered by execute's return, as a request that is not decoupled
    finally:
        m.finalize()


def test_the_mpi_job_inherited_from_mpirun_is_cleared_before_the_llm_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """deploy starts tritonserver as rank 0 of `mpirun -n 1` for an llmapi model; this stub inherited mpirun's job
    (rank, PMIx namespace and server), and the LLM API's MPI initialisation registered under it instead of starting
    a job of its own to spawn its workers. The job's variables are removed before tensorrt_llm is imported, and MPI's
    settings are kept (as upstream's model.py @ 044a90d2)."""
    module = load_model(MODEL_PY, monkeypatch)
    env = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1", "PMIX_NAMESPACE": "prterun-x@1",
           "PMIX_RANK": "0", "PMIX_SERVER_URI41": "uri", "PMI_FD": "3", "OMPI_MCA_orte_hnp_uri": "u",
           "ORTE_SOMETHING": "1", "OMPI_MCA_btl": "^openib", "PMIX_MCA_gds": "hash", "PATH": "/usr/bin"}
    removed = module.clear_inherited_mpi_job(env)
    assert removed == ["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_MCA_orte_hnp_uri", "ORTE_SOMETHING",
                       "PMIX_NAMESPACE", "PMIX_RANK", "PMI_FD"]
    # configuration stays; PMIX_SERVER_URI41 is not upstream's list either (only the URIs it names are cleared)
    assert env == {"PMIX_SERVER_URI41": "uri", "OMPI_MCA_btl": "^openib", "PMIX_MCA_gds": "hash", "PATH": "/usr/bin"}
    assert module.clear_inherited_mpi_job({}) == []

    seen: dict[str, str | None] = {}

    class EnvLLM(FakeLLM):  # what the LLM API sees of the environment when it is created
        def __init__(self, **kwargs: Any) -> None:
            seen.update({k: os.environ.get(k) for k in ("OMPI_COMM_WORLD_RANK", "PMIX_NAMESPACE", "OMPI_MCA_btl")})
            super().__init__(**kwargs)

    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("PMIX_NAMESPACE", "prterun-x@1")
    monkeypatch.setenv("OMPI_MCA_btl", "^openib")
    m = _model_with(EnvLLM, monkeypatch, tmp_path)
    m.finalize()
    assert seen == {"OMPI_COMM_WORLD_RANK": None, "PMIX_NAMESPACE": None, "OMPI_MCA_btl": "^openib"}
