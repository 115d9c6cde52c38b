"""Triton python-backend model (tritonforge): `tensorrt_llm_bls`, the `llm` pipeline as one BLS model.

Same inputs and outputs as the `llm` ensemble (upstream TensorRT-LLM's `tensorrt_llm_bls` contract), and the same
three steps, called through BLS (`pb_utils.InferenceRequest`) instead of an ensemble scheduler:

    request ─► preprocessing ─► tensorrt_llm (streamed when `stream` is true) ─► postprocessing per response

Each step gets its inputs exactly as the `llm` ensemble's `ensemble_scheduling` wires them (PRE_INPUTS,
PRE_TO_TRT and TRT_INPUTS below are its input_map/output_map, read from the ensemble's side). tritonforge's
additions to the ensemble (`apply_chat_template`, `lora_name`, `lora_send_weights`) are declared on this model's
config whenever they are declared on the ensemble, and routed the same way: with `lora_name`, the upstream
`lora_task_id` goes through preprocessing (its LORA_TASK_ID), which answers OUT_LORA_TASK_ID for tensorrt_llm; with
`lora_send_weights` (gpu adapters), `lora_weights`/`lora_config` go through preprocessing too.

Why a BLS model beside the ensemble: it can do what an ensemble cannot.
* LoRA eviction is handled here: when tensorrt_llm answers TensorRT-LLM's "LoRA task N not found in cache. Please
  send LoRA weights with request" before any token, preprocessing runs again with `lora_send_weights` (which then
  attaches the adapter's weights) and the request is sent to tensorrt_llm once more. Raw clients never see it.
* Cancellation reaches the engine: when the client cancels (`is_cancelled()`), upstream's `stop` signal goes to
  tensorrt_llm with the running request's id (Triton 2.51 cannot cancel a BLS stream; newer ones can, and the
  stream is cancelled as well when the iterator offers `cancel()`). A client that sends `stop` to tensorrt_llm
  itself (same request id: the client's, forwarded) ends the generation, and this model ends its stream.

Outputs per response: `text_output` (the new text when streaming, or with parameter accumulate_tokens all the
text so far, as upstream; the whole text otherwise) and whatever tensorrt_llm answered of the other declared
outputs (cum_log_probs, output_log_probs, context/generation logits, batch_index, perf and token counts).

Parameters (config.pbtxt; empty or `${...}` counts as unset)
  tensorrt_llm_model_name   the engine model (default `tensorrt_llm`)
  preprocessing_model_name, postprocessing_model_name   default: the engine model's name with `tensorrt_llm`
                            replaced (`chat_tensorrt_llm` -> `chat_preprocessing`), so prefixed sets need nothing
  accumulate_tokens         streaming: detokenize all tokens so far (true) or only the new ones (default false)
  tensorrt_llm_draft_model_name, multimodal_encoders_name   accepted; speculative decoding and multimodal
                            encoders are not implemented here (a request that needs them gets an UNSUPPORTED error)

Decoupled (the normal configuration, `decoupled_mode: true`): `execute` starts one thread per request and returns
None; each request gets its responses and then FINAL (an error response with FINAL on failure, to that request
only). Not decoupled: `execute` answers each request with one response (no streaming).

Only numpy, triton_python_backend_utils and bls_retired.py (shipped beside it) are imported, never tritonforge, so
the file runs in an NGC container.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _load_sibling(name: str) -> ModuleType:
    """A module shipped next to this model.py, loaded by path: neither Triton's sys.path nor another model's module
    of the same name decides which file it is."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_retired = _load_sibling("bls_retired").Retired()  # finished BLS iterators, kept past their end (bls_retired.py)
FINAL = getattr(pb_utils, "TRITONSERVER_RESPONSE_COMPLETE_FINAL", 1)
LORA_EVICTED = "not found in cache"  # TensorRT-LLM: "LoRA task N not found in cache. Please send LoRA weights ..."
CANCEL_POLL_SECONDS = 0.1

# the `llm` ensemble's wiring: preprocessing input <- this model's input
PRE_INPUTS = {
    "QUERY": "text_input",
    "DECODER_QUERY": "decoder_text_input",
    "REQUEST_OUTPUT_LEN": "max_tokens",
    "BAD_WORDS_DICT": "bad_words",
    "STOP_WORDS_DICT": "stop_words",
    "EMBEDDING_BIAS_WORDS": "embedding_bias_words",
    "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights",
    "END_ID": "end_id",
    "PAD_ID": "pad_id",
    "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id",
    # upstream's BLS extras that preprocessing takes (tritonforge's preprocessing refuses them clearly)
    "IMAGE_BYTES": "image_bytes_input",
    "IMAGE_URL": "image_url_input",
    "IMAGE_SIZES": "image_sizes_input",
    "VIDEO_BYTES": "video_bytes_input",
}
# when this model declares them (the pre_inputs filter below keeps only what is declared)
CHAT_INPUTS = {"apply_chat_template": "apply_chat_template", "chat_messages": "chat_messages"}
ADAPTER_INPUTS = {"lora_name": "lora_name", "LORA_TASK_ID": "lora_task_id"}  # when it declares lora_name
WEIGHTS_INPUTS = {  # when it declares lora_send_weights (gpu adapters)
    "LORA_WEIGHTS": "lora_weights",
    "LORA_CONFIG": "lora_config",
    "lora_send_weights": "lora_send_weights",
}
# preprocessing output -> tensorrt_llm input
PRE_TO_TRT = {
    "INPUT_ID": "input_ids",
    "DECODER_INPUT_ID": "decoder_input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "REQUEST_DECODER_INPUT_LEN": "decoder_input_lengths",
    "REQUEST_OUTPUT_LEN": "request_output_len",
    "OUT_END_ID": "end_id",
    "OUT_PAD_ID": "pad_id",
    "EMBEDDING_BIAS": "embedding_bias",
    "STOP_WORDS_IDS": "stop_words_list",
    "BAD_WORDS_IDS": "bad_words_list",
    "OUT_PROMPT_TABLE_EXTRA_IDS": "prompt_table_extra_ids",
}
ADAPTER_OUTPUTS = {"OUT_LORA_TASK_ID": "lora_task_id"}
WEIGHTS_OUTPUTS = {"OUT_LORA_WEIGHTS": "lora_weights", "OUT_LORA_CONFIG": "lora_config"}
# tensorrt_llm input <- this model's input
TRT_INPUTS = {
    "exclude_input_in_output": "exclude_input_in_output",
    "runtime_top_k": "top_k",
    "runtime_top_p": "top_p",
    "temperature": "temperature",
    "len_penalty": "length_penalty",
    "repetition_penalty": "repetition_penalty",
    "min_tokens": "min_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "return_log_probs": "return_log_probs",
    "return_context_logits": "return_context_logits",
    "return_generation_logits": "return_generation_logits",
    "return_perf_metrics": "return_perf_metrics",
    "return_num_input_tokens": "return_num_input_tokens",
    "return_num_output_tokens": "return_num_output_tokens",
    "num_return_sequences": "num_return_sequences",
    "beam_width": "beam_width",
    "streaming": "stream",
    "prompt_embedding_table": "prompt_embedding_table",
    "prompt_vocab_size": "prompt_vocab_size",
    "lora_task_id": "lora_task_id",
    "lora_weights": "lora_weights",
    "lora_config": "lora_config",
    "guided_decoding_guide_type": "guided_decoding_guide_type",
    "guided_decoding_guide": "guided_decoding_guide",
}
# tensorrt_llm outputs passed on under the same name (when this model declares them)
TRT_OUTPUTS = (
    "cum_log_probs", "output_log_probs", "context_logits", "generation_logits", "batch_index", "sequence_index",
    "kv_cache_alloc_new_blocks", "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks", "arrival_time_ns",
    "first_scheduled_time_ns", "first_token_time_ns", "last_token_time_ns", "acceptance_rate",
    "total_accepted_draft_tokens", "total_draft_tokens", "num_input_tokens", "num_output_tokens",
)


class RequestError(Exception):
    """A problem with one request: an error response to that request only."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = pb_utils.TritonError.INVALID_ARG if code is None else code


class StepError(Exception):
    """A step answered an error: passed on to the client with the step's message and code."""

    def __init__(self, error: Any) -> None:
        super().__init__(_message(error))
        self.error = error


def _message(error: Any) -> str:
    try:
        return error.message()
    except Exception:
        return str(error)


def _code(name: str) -> Any:
    return getattr(pb_utils.TritonError, name, pb_utils.TritonError.INTERNAL)


def _log(level: str, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}", logger.log_info)(message)
    else:
        print(f"[llm_bls] {level}: {message}", flush=True)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "t", "on")


def _is_set(array: np.ndarray | None) -> bool:
    """An optional input counts as sent when it holds something (an empty string list does not)."""
    if array is None or array.size == 0:
        return False
    if array.dtype == np.object_:
        return any(len(x) if isinstance(x, bytes | str) else True for x in array.reshape(-1))
    return True


class _Job:
    """One client request being answered: where its responses go, and how to stop its generation."""

    def __init__(self, request: Any, sender: Any, trt_request_id: str) -> None:
        self.request = request
        self.sender = sender
        self.trt_request_id = trt_request_id
        self.iterator: Any = None  # the running tensorrt_llm response iterator
        self.stream_key = uuid.uuid4().hex  # postprocessing's per-stream detokenization state
        self.accumulated: dict[int, np.ndarray] = {}  # accumulate_tokens: batch index -> all tokens so far
        self.cancelled = False
        self.stop_sent = False
        self.closed = False
        # The cancellation watcher probes from its own thread. Once FINAL is sent Triton deletes the response
        # factory, and probing it then crashes the server (Triton 2.51: SIGSEGV in
        # TRITONBACKEND_ResponseFactoryIsCancelled): probe and FINAL are serialized, and a closed job is not probed.
        self.lock = threading.Lock()

    def is_cancelled(self) -> bool:
        with self.lock:
            if self.cancelled or self.closed:
                return self.cancelled
            for probe in (getattr(self.sender, "is_cancelled", None), getattr(self.request, "is_cancelled", None)):
                if probe is None:
                    continue
                try:
                    self.cancelled = bool(probe())
                except Exception:  # an older python backend without cancellation support
                    continue
                break
            return self.cancelled

    def send(self, response: Any = None, final: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            if final:
                self.closed = True
            try:
                if final and response is None:
                    self.sender.send(flags=FINAL)
                else:
                    self.sender.send(response, flags=FINAL if final else 0)
            except Exception as err:  # the client is gone: nothing more to deliver
                _log("verbose", f"could not send a response: {err}")


class _Collector:
    """The response sender of a non-decoupled request: keeps every response until FINAL."""

    def __init__(self) -> None:
        self.responses: list[Any] = []

    def send(self, response: Any = None, flags: int = 0) -> None:
        if response is not None:
            self.responses.append(response)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value", "") for k, v in config.get("parameters", {}).items()}

        def param(name: str, default: str) -> str:
            value = (params.get(name) or "").strip()
            return default if not value or value.startswith("${") else value

        self.trt_model = param("tensorrt_llm_model_name", "tensorrt_llm")
        # prefixed sets (chat_tensorrt_llm) have prefixed steps (chat_preprocessing): follow the engine's name
        base = self.trt_model if "tensorrt_llm" in self.trt_model else "tensorrt_llm"
        self.pre_model = param("preprocessing_model_name", base.replace("tensorrt_llm", "preprocessing"))
        self.post_model = param("postprocessing_model_name", base.replace("tensorrt_llm", "postprocessing"))
        self.accumulate = _truthy(param("accumulate_tokens", "false"))
        if param("tensorrt_llm_draft_model_name", "") or param("multimodal_encoders_name", ""):
            _log("warn", "tensorrt_llm_draft_model_name / multimodal_encoders_name are set, but this BLS model "
                         "implements neither speculative decoding nor multimodal encoders")
        self.decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
        self.batched = int(config.get("max_batch_size", 0)) > 0
        declared = {i["name"] for i in config.get("input", [])}
        self.declared_outputs = {o["name"] for o in config.get("output", [])}

        # which of tritonforge's additions the set has (declared here exactly when declared on the ensemble)
        self.pre_inputs = dict(PRE_INPUTS)
        self.pre_outputs = dict(PRE_TO_TRT)
        self.trt_inputs = dict(TRT_INPUTS)
        if "apply_chat_template" in declared:
            self.pre_inputs.update(CHAT_INPUTS)
        if "lora_name" in declared:  # lora_task_id goes through preprocessing
            self.pre_inputs.update(ADAPTER_INPUTS)
            self.pre_outputs.update(ADAPTER_OUTPUTS)
            del self.trt_inputs["lora_task_id"]
        self.can_resend_weights = "lora_send_weights" in declared
        if self.can_resend_weights:  # lora_weights/lora_config go through preprocessing
            self.pre_inputs.update(WEIGHTS_INPUTS)
            self.pre_outputs.update(WEIGHTS_OUTPUTS)
            del self.trt_inputs["lora_weights"], self.trt_inputs["lora_config"]
        self.pre_inputs = {k: v for k, v in self.pre_inputs.items() if v in declared}
        self.trt_inputs = {k: v for k, v in self.trt_inputs.items() if v in declared}
        self.trt_outputs = ["output_ids", "sequence_length"] + [n for n in TRT_OUTPUTS if n in self.declared_outputs]

        self.lock = threading.Lock()
        self.jobs: set[_Job] = set()
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._watch_cancellation, name="llm-bls-cancel", daemon=True)
        self.watcher.start()

    def finalize(self) -> None:
        self.stopping.set()
        for thread in [*self.threads, self.watcher]:
            thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------------- execute

    def execute(self, requests: list[Any]) -> list[Any] | None:
        if self.decoupled:
            for request in requests:
                thread = threading.Thread(target=self._answer, args=(request, request.get_response_sender()),
                                          daemon=True)
                thread.start()
                self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            return None
        responses = []
        for request in requests:
            collector = _Collector()
            self._answer(request, collector)
            responses.append(self._merged(collector.responses))
        return responses

    def _answer(self, request: Any, sender: Any) -> None:
        """Run the pipeline for one request; every outcome ends with FINAL."""
        job = _Job(request, sender, self._trt_request_id(request))
        with self.lock:
            self.jobs.add(job)
        try:
            self._run(job)
            if job.cancelled:
                job.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "the request was cancelled", _code("CANCELLED"))), final=True)
            else:
                job.send(final=True)
        except StepError as err:
            code = getattr(err.error, "code", None)
            error = pb_utils.TritonError(str(err), code()) if callable(code) else pb_utils.TritonError(str(err))
            job.send(pb_utils.InferenceResponse(error=error), final=True)
        except RequestError as err:
            job.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), err.code)), final=True)
        except Exception as err:  # a bug here must not take the model down
            _log("error", f"request failed: {type(err).__name__}: {err}")
            job.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                f"tensorrt_llm_bls failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL)), final=True)
        finally:
            with self.lock:
                self.jobs.discard(job)

    @staticmethod
    def _trt_request_id(request: Any) -> str:
        """The client's request id (so its `stop` to tensorrt_llm still works), else a fresh one."""
        try:
            given = request.request_id() or ""
        except Exception:
            given = ""
        return given or f"bls-{uuid.uuid4().hex}"

    def _merged(self, responses: list[Any]) -> Any:
        """A non-decoupled request's one response: the only one, or the per-prompt ones joined (B > 1)."""
        errors = [r for r in responses if r.has_error()]
        if errors or len(responses) == 1:
            return errors[0] if errors else responses[0]
        if not responses:
            return pb_utils.InferenceResponse(output_tensors=[])
        names = [t.name() for t in responses[0].output_tensors()]
        try:
            tensors = [pb_utils.Tensor(name, np.concatenate(
                [pb_utils.get_output_tensor_by_name(r, name).as_numpy() for r in responses])) for name in names]
        except (ValueError, AttributeError):
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                "the prompts of this request have outputs of different shapes: send one prompt per request",
                pb_utils.TritonError.INVALID_ARG))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    # ------------------------------------------------------------------------------------------------ pipeline

    def _run(self, job: _Job) -> None:
        arrays = {t.name(): t.as_numpy() for t in job.request.inputs()}
        if not self.batched:
            arrays = {k: v[np.newaxis, ...] for k, v in arrays.items()}
        self._check(arrays)
        streaming = "stream" in arrays and bool(arrays["stream"].reshape(-1).any())
        if streaming and not self.decoupled:
            raise RequestError("stream=true needs the decoupled tensorrt_llm_bls (decoupled_mode: true)")
        send_weights = "lora_send_weights" in arrays and bool(arrays["lora_send_weights"].reshape(-1).any())
        sent_any = False
        for attempt in range(2):
            pre = self._preprocess(arrays, force_weights=attempt > 0)
            try:
                for response in self._generate(job, arrays, pre):
                    self._forward(job, response, streaming)
                    sent_any = True
                return
            except StepError as err:
                evicted = LORA_EVICTED in str(err) and self.can_resend_weights and not send_weights
                if attempt or sent_any or not evicted:
                    raise
                # the adapter was evicted from TensorRT-LLM's LoRA cache: send it again, with its weights
                _log("info", f"request '{job.trt_request_id}': {err}; resending the adapter's weights")

    def _check(self, arrays: dict[str, np.ndarray]) -> None:
        if "text_input" not in arrays or arrays["text_input"].size == 0:
            raise RequestError("input 'text_input' (TYPE_STRING [1]) is required")
        if "max_tokens" not in arrays or arrays["max_tokens"].size == 0:
            raise RequestError("input 'max_tokens' (TYPE_INT32 [1]) is required")
        unsupported = _code("UNSUPPORTED")
        if _is_set(arrays.get("image_input")):
            raise RequestError("input 'image_input' is not supported: this BLS model has no multimodal encoders",
                               unsupported)
        drafts = arrays.get("num_draft_tokens")
        if drafts is not None and drafts.size and bool((drafts > 0).any()):
            raise RequestError("input 'num_draft_tokens' is not supported: this BLS model does not implement "
                               "speculative decoding", unsupported)

    @staticmethod
    def _tensor(name: str, array: np.ndarray) -> Any:
        # inputs declared with `reshape: []` reach a model without their [1]; the next model wants it back
        return pb_utils.Tensor(name, array.reshape(-1, 1) if array.ndim == 1 else array)

    def _call(self, model: str, inputs: list[Any], outputs: list[str], request_id: str = "") -> dict[str, np.ndarray]:
        """A non-streamed BLS call; a StepError on failure."""
        request = pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs,
                                            request_id=request_id)
        response = request.exec()
        if response.has_error():
            raise StepError(response.error())
        return {t.name(): t.as_numpy() for t in response.output_tensors()}

    def _preprocess(self, arrays: dict[str, np.ndarray], force_weights: bool = False) -> dict[str, np.ndarray]:
        inputs = [self._tensor(pre, arrays[ours]) for pre, ours in self.pre_inputs.items() if ours in arrays]
        if force_weights:
            batch = arrays["text_input"].shape[0]
            inputs = [t for t in inputs if t.name() != "lora_send_weights"]
            inputs.append(pb_utils.Tensor("lora_send_weights", np.ones((batch, 1), dtype=bool)))
        return self._call(self.pre_model, inputs, list(self.pre_outputs))

    def _generate(self, job: _Job, arrays: dict[str, np.ndarray], pre: dict[str, np.ndarray]) -> Iterator[Any]:
        """tensorrt_llm's responses (each checked), streamed as they come when tensorrt_llm is decoupled."""
        inputs = [pb_utils.Tensor(self.pre_outputs[name], value) for name, value in pre.items()
                  if name in self.pre_outputs]
        inputs += [self._tensor(trt, arrays[ours]) for trt, ours in self.trt_inputs.items() if ours in arrays]
        request = pb_utils.InferenceRequest(model_name=self.trt_model, inputs=inputs,
                                            requested_output_names=self.trt_outputs, request_id=job.trt_request_id)
        # decoupled=True also serves a non-decoupled tensorrt_llm (one response, then the end of the iterator)
        responses = request.exec(decoupled=True)
        job.iterator = responses
        try:
            for response in responses:
                if response.has_error():
                    raise StepError(response.error())
                if job.cancelled:
                    continue  # drain what the engine still sends after the stop, deliver nothing
                if response.output_tensors():
                    yield response
        finally:
            job.iterator = None
            _retired.keep(responses)  # the last reference stays Python's

    def _forward(self, job: _Job, response: Any, streaming: bool) -> None:
        """Postprocess one tensorrt_llm response and send it on."""
        outputs = {t.name(): t.as_numpy() for t in response.output_tensors()}
        if "output_ids" not in outputs or "sequence_length" not in outputs:
            return
        tokens, lengths = outputs["output_ids"], outputs["sequence_length"]
        key = ""
        if streaming and self.accumulate:  # all tokens so far, detokenized at once (upstream's accumulate_tokens)
            index = int(outputs["batch_index"].reshape(-1)[0]) if "batch_index" in outputs else 0
            previous = job.accumulated.get(index)
            tokens = tokens if previous is None else np.concatenate([previous, tokens], axis=2)
            job.accumulated[index] = tokens
            lengths = np.full(tokens.shape[:2], tokens.shape[2], dtype=np.int32)
        elif streaming:  # new tokens only: postprocessing decodes them in the context of this stream
            key = job.stream_key
        text = self._call(self.post_model, [pb_utils.Tensor("TOKENS_BATCH", tokens.astype(np.int32)),
                                            pb_utils.Tensor("SEQUENCE_LENGTH", lengths.astype(np.int32))],
                          ["OUTPUT"], request_id=key)["OUTPUT"]
        text = text.reshape(tokens.shape[0], -1) if self.batched else text.reshape(-1)
        tensors = [pb_utils.Tensor("text_output", text)]
        for name in TRT_OUTPUTS:
            if name in outputs and name in self.declared_outputs:
                value = outputs[name]
                tensors.append(pb_utils.Tensor(name, value if self.batched else value[0]))
        job.send(pb_utils.InferenceResponse(output_tensors=tensors))

    # -------------------------------------------------------------------------------------------- cancellation

    def _watch_cancellation(self) -> None:
        """Every request is checked for cancellation while it runs (a BLS call blocks its own thread)."""
        while not self.stopping.wait(CANCEL_POLL_SECONDS):
            with self.lock:
                jobs = list(self.jobs)
            for job in jobs:
                if not job.stop_sent and job.is_cancelled():
                    job.stop_sent = True
                    # on its own thread: a stop can wait behind a busy engine, other requests must not
                    threading.Thread(target=self._stop, args=(job,), daemon=True).start()

    def _stop(self, job: _Job) -> None:
        """Stop the engine's generation for a cancelled request: cancel the BLS stream where pb_utils can, and
        send upstream's `stop` (the running request's id) to tensorrt_llm."""
        _log("info", f"request '{job.trt_request_id}' was cancelled: stopping its generation")
        iterator = job.iterator
        if iterator is not None and hasattr(iterator, "cancel"):
            with contextlib.suppress(Exception):
                iterator.cancel()
        inputs = [
            pb_utils.Tensor("input_ids", np.zeros((1, 1), dtype=np.int32)),
            pb_utils.Tensor("input_lengths", np.ones((1, 1), dtype=np.int32)),
            pb_utils.Tensor("request_output_len", np.ones((1, 1), dtype=np.int32)),
            pb_utils.Tensor("stop", np.ones((1, 1), dtype=bool)),
            pb_utils.Tensor("streaming", np.zeros((1, 1), dtype=bool)),
        ]
        request = pb_utils.InferenceRequest(model_name=self.trt_model, inputs=inputs, requested_output_names=[],
                                            request_id=job.trt_request_id)
        started = time.monotonic()
        try:
            stopped = request.exec(decoupled=True)
            try:
                for _ in stopped:
                    pass
            finally:
                _retired.keep(stopped)
        except Exception as err:  # best effort: the client is gone anyway
            _log("warn", f"could not send stop for request '{job.trt_request_id}': {err}")
        _log("verbose", f"stop for '{job.trt_request_id}' answered in {time.monotonic() - started:.3f}s")
