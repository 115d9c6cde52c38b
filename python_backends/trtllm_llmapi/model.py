"""Triton python-backend model (tritonforge): TensorRT-LLM's LLM API behind the tensors of upstream's llmapi model.

The gpu target's `tensorrt_llm` model on the LLM API path (`runtime: llmapi`). Tensor names and types are those of
NVIDIA TensorRT-LLM's `triton_backend/all_models/llmapi/tensorrt_llm` (config.pbtxt @ 0ebb1536ac12bbe27201185de9
60df3ab00bcecc); this file is tritonforge's own, written against that contract and the `tensorrt_llm.LLM` API:

  model.yaml (in the version folder, or $LLM_CONFIG_PATH) -> `LLM(**args)`; `triton_config` (max_batch_size,
  decoupled, cancellation_check_period_ms) is Triton's, not the LLM's. A relative `model` is resolved against the
  version folder (the repository ships the checkpoint there).
  text_input (a prompt per batch item) + sampling_param_<x> -> `SamplingParams(x=...)`; `streaming`;
  `lora_id` + `lora_name` + `lora_path` -> `LoRARequest` (all three or none; an empty lora_name is the base model;
  a relative lora_path is resolved against the version folder); `stop` (true) aborts the running request with
  this request's id; `return_finish_reason`, `return_stop_reason`, `return_cumulative_logprob`.
  -> text_output (streaming: each response carries the new text only, as the `llm` ensemble's clients expect),
  finish_reason, stop_reason (as strings, like upstream's model.py) and cumulative_logprob (FP32, as the config
  declares; upstream's model.py sends text) when asked for;
  tritonforge's additions return_num_input_tokens / return_num_output_tokens -> num_input_tokens /
  num_output_tokens INT32 (the gateway's exact `usage`).

Differences from upstream's model.py, on purpose: batched requests (max_batch_size > 0, one prompt per batch item,
so the `llm` ensemble keeps its batched contract; upstream takes only 1-D text_input), streamed deltas instead of the
cumulative text, `exclude_input_from_output` defaults to true (the completion only; upstream's helper sends false),
the perf-metric outputs are not produced, and logits post-processors are not loaded (model.yaml's
`logits_post_processors` is dropped), so a request naming one in `sampling_param_logits_post_processor_name` is
refused rather than decoded without it.

Needs an NVIDIA GPU and the `tensorrt_llm` package (an NGC tritonserver trtllm-python-py3 image). Only numpy,
PyYAML, tensorrt_llm and triton_python_backend_utils are imported, never tritonforge.
"""

import asyncio
import contextlib
import json
import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = getattr(pb_utils, "TRITONSERVER_RESPONSE_COMPLETE_FINAL", 1)
SAMPLING = ("best_of", "temperature", "top_k", "top_p", "frequency_penalty", "presence_penalty", "max_tokens", "seed",
            "exclude_input_from_output", "return_perf_metrics")
DEFAULTS = {"exclude_input_from_output": True}
COUNTS = ("return_num_input_tokens", "return_num_output_tokens")  # tritonforge additions: exact token counts
REASONS = {"return_finish_reason": ("finish_reason", "finish_reason"),
           "return_stop_reason": ("stop_reason", "stop_reason"),
           "return_cumulative_logprob": ("cumulative_logprob", "cumulative_logprob")}


class RequestError(Exception):
    pass


MAX_TEXT_BYTES = 1 << 20  # a prompt longer than this is refused before it is decoded (the tokenizers' limit)


STATS_WAIT_S = 2.0  # get_stats_async's wait for iteration statistics (LLM()'s default)
STATS_PERIOD_S = 1.0  # between two reads of them
IDLE_READS = 3  # reads in a row without statistics: the LLM runs no iteration


class Backlog:
    """The LLM's own queue on Triton's metrics port, in TensorRT-LLM's family (what the engine path's C++ backend
    publishes, and deploy's autoscaler reads): ``nv_trt_llm_request_metrics{model, version, request_type}`` with
    ``waiting`` (queued, and paused by the scheduler), ``active``, ``scheduled`` and ``max``, from the LLM API's
    iteration statistics (``LLM(enable_iter_perf_stats=True)``; their JSON fields: NVIDIA/TensorRT-LLM
    cpp/tensorrt_llm/executor/jsonSerialization.cpp @ 092229bb6e1ce6e7f0db2ba010b7fdaf654e1549). The model takes
    every request at once, so Triton's queue time stayed near zero however many waited in the LLM's queue, and an
    autoscaler never saw them. Best effort: without custom metrics or statistics it only leaves them out."""

    TYPES = ("waiting", "active", "scheduled", "max")

    def __init__(self, model, version):
        self.metrics = None
        family = getattr(pb_utils, "MetricFamily", None)
        if family is None:
            return
        try:
            self.family = family(name="nv_trt_llm_request_metrics", description="TRT LLM request metrics",
                                 kind=family.GAUGE)
            self.metrics = {kind: self.family.Metric(labels={"request_type": kind, "model": model,
                                                             "version": str(version)}) for kind in self.TYPES}
        except Exception as err:
            self.metrics = None
            print(f"[trtllm_llmapi] model '{model}': the LLM's request metrics are left out: {err}", flush=True)

    def publish(self, stat):
        """One iteration's statistics (a dict, or its JSON text) onto the gauges."""
        if self.metrics is None:
            return
        if isinstance(stat, (str, bytes)):
            stat = json.loads(stat)
        inflight = stat.get("inflightBatchingStats") or {}
        values = {
            "waiting": int(stat.get("numQueuedRequests", 0)) + int(inflight.get("numPausedRequests", 0)),
            "active": int(stat.get("numActiveRequests", 0)),
            "scheduled": int(inflight.get("numScheduledRequests", stat.get("numActiveRequests", 0))),
            "max": int(stat.get("maxNumActiveRequests", 0)),
        }
        for kind, value in values.items():
            self.metrics[kind].set(value)

    async def follow(self, llm, started):
        """Read the LLM's iteration statistics until cancelled (finalize), from the first request on (before it,
        TensorRT-LLM's executor logs "not available yet" at every read). Reads that bring none for IDLE_READS in a
        row mean the LLM is idle (it runs no iteration): the gauges go to 0 (they kept the last busy values)."""
        await started.wait()
        empty = 0
        while True:
            got = False
            try:
                async for stat in llm.get_stats_async(timeout=STATS_WAIT_S):
                    self.publish(stat)
                    got = True
            except asyncio.CancelledError:
                raise
            except Exception:  # no statistics this round (their queue timed out): read again
                pass
            empty = 0 if got else empty + 1
            if empty == IDLE_READS and self.metrics is not None:
                for kind in ("waiting", "active", "scheduled"):
                    self.metrics[kind].set(0)
            await asyncio.sleep(STATS_PERIOD_S)


def _resolve(path, version_dir):
    return path if os.path.isabs(path) else os.path.join(version_dir, path)


def read_model_yaml(version_dir):
    """(LLM() arguments, triton_config) from model.yaml; relative `model` resolved against the version folder."""
    import yaml

    path = _resolve(os.environ.get("LLM_CONFIG_PATH", "model.yaml"), version_dir)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or "model" not in data:
        raise RuntimeError(f"{path}: expected a mapping of tensorrt_llm.LLM() arguments with at least `model`")
    triton_config = data.pop("triton_config", None) or {}
    data.pop("logits_post_processors", None)
    model = str(data["model"])
    local = _resolve(model, version_dir)
    if not os.path.isabs(model) and os.path.exists(local):  # a hub id stays as it is
        data["model"] = local
    return data, triton_config


def _rows(arrays, name, batch):
    """Per batch item: the value of an optional scalar input, or None."""
    value = arrays.get(name)
    if value is None or value.size == 0:
        return [None] * batch
    flat = value.reshape(value.shape[0], -1)
    items = [flat[i if flat.shape[0] > i else 0][0] for i in range(batch)]
    return [v.item() if hasattr(v, "item") else v for v in items]  # strings arrive as bytes objects


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args):
        self.config = json.loads(args["model_config"])
        self.version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        self.llm_args, triton_config = read_model_yaml(self.version_dir)
        self.decoupled = bool(self.config.get("model_transaction_policy", {}).get("decoupled", False))
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        self.check_period = float(triton_config.get("cancellation_check_period_ms", 100)) / 1000.0
        from tensorrt_llm import LLM, SamplingParams

        self.SamplingParams = SamplingParams
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="llmapi-loop")
        self.thread.start()
        self.llm = LLM(**self.llm_args)
        self.running = {}  # request id -> set of generation handles (for `stop`)
        self.lock = threading.Lock()
        self.stats = None
        self.first_request = asyncio.Event()  # set on the loop (call_soon_threadsafe) at the first request
        if self.llm_args.get("enable_iter_perf_stats"):
            backlog = Backlog(self.config.get("name", args.get("model_name", "")), args["model_version"])
            if backlog.metrics is not None:
                self.stats = asyncio.run_coroutine_threadsafe(backlog.follow(self.llm, self.first_request), self.loop)

    def finalize(self):
        stats = getattr(self, "stats", None)
        if stats is not None:
            stats.cancel()
            with contextlib.suppress(Exception):  # a turn of the loop for the reader to end before the loop stops
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), self.loop).result(2)
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.shutdown()
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=10)
            if not loop.is_running():  # closed only once stopped: a loop stuck in a callback is left to exit
                loop.close()

    # ------------------------------------------------------------------------------------------------ requests

    def parse(self, request):
        """One request -> (prompts, SamplingParams per item, LoRA request per item, streaming, output flags)."""
        arrays = {t.name(): t.as_numpy() for t in request.inputs()}
        if not self.batched:
            arrays = {k: v[np.newaxis, ...] for k, v in arrays.items()}
        if "text_input" not in arrays or arrays["text_input"].size == 0:
            raise RequestError("input 'text_input' (TYPE_STRING) is required")
        texts = arrays["text_input"].reshape(arrays["text_input"].shape[0], -1)
        batch = texts.shape[0]
        if texts.shape[1] != 1:
            raise RequestError(f"text_input carries one prompt per batch item; got {texts.shape[1]}")
        for i in range(batch):
            size = len(texts[i, 0]) if isinstance(texts[i, 0], bytes) else 0
            if size > MAX_TEXT_BYTES:
                raise RequestError(f"text_input[{i}] is {size} bytes; at most {MAX_TEXT_BYTES} are taken")
        prompts = [_text(texts[i, 0]) for i in range(batch)]
        streaming = bool(_rows(arrays, "streaming", batch)[0] or False)
        if streaming and not self.decoupled:
            raise RequestError("streaming is only supported when the model is decoupled (triton_config.decoupled)")
        if streaming and batch > 1:
            raise RequestError("a streamed request carries one prompt")
        named = [_text(n) for n in _rows(arrays, "sampling_param_logits_post_processor_name", batch) if n is not None]
        if any(named):
            raise RequestError(f"sampling_param_logits_post_processor_name {named[0]!r}: this model loads no logits "
                               "post-processors; leave it empty")
        values = {name: _rows(arrays, f"sampling_param_{name}", batch) for name in SAMPLING}
        stops = arrays.get("sampling_param_stop")
        params = []
        for i in range(batch):
            kwargs = {name: DEFAULTS.get(name) if values[name][i] is None else values[name][i] for name in SAMPLING}
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            if stops is not None and stops.size:
                row = stops[i if stops.shape[0] > i else 0].reshape(-1)
                kwargs["stop"] = [_text(s) for s in row if _text(s)]
            try:
                params.append(self.SamplingParams(**kwargs))
            except (TypeError, ValueError) as err:
                raise RequestError(f"bad sampling parameters: {err}") from None
        loras = [self.lora_request(arrays, i, batch) for i in range(batch)]
        flags = {name: bool(_rows(arrays, name, batch)[0] or False) for name in (*REASONS, *COUNTS)}
        return prompts, params, loras, streaming, flags

    def lora_request(self, arrays, i, batch):
        ids, names, paths = (_rows(arrays, n, batch)[i] for n in ("lora_id", "lora_name", "lora_path"))
        names = _text(names).strip() if names is not None else ""
        if not names:
            return None  # the base model
        if ids is None or paths is None:
            raise RequestError("lora_id, lora_name and lora_path must all be provided together")
        path = _resolve(_text(paths), self.version_dir)
        if not os.path.exists(path):
            raise RequestError(f"lora_path {path} does not exist on the server")
        from tensorrt_llm.executor.request import LoRARequest

        source = _rows(arrays, "lora_ckpt_source", batch)[i]
        return LoRARequest(names, int(ids), path, lora_ckpt_source=_text(source) if source else "hf")

    def execute(self, requests):
        if not self.first_request.is_set():  # the statistics reader waits for it (see Backlog.follow)
            self.loop.call_soon_threadsafe(self.first_request.set)
        results = []
        for request in requests:
            sender = request.get_response_sender() if self.decoupled else None
            try:
                parsed = self.parse(request)
            except Exception as err:  # a bad request gets its own error; the others are served
                message = str(err) if isinstance(err, RequestError) else f"{type(err).__name__}: {err}"
                error = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
                if sender is not None:
                    sender.send(error, flags=FINAL)
                results.append(error)
                continue
            stop = _rows({t.name(): t.as_numpy() for t in request.inputs()}, "stop", 1)[0]
            if stop:
                self.stop(request, sender)
                results.append(pb_utils.InferenceResponse(output_tensors=[]))
                continue
            future = asyncio.run_coroutine_threadsafe(self.generate(request, sender, *parsed), self.loop)
            if sender is None:
                results.append(future.result())
        return None if self.decoupled else results

    def stop(self, request, sender):
        request_id = request.request_id()
        if not request_id:
            response = pb_utils.InferenceResponse(
                error=pb_utils.TritonError("a request id must be provided for request cancellation"))
        else:
            with self.lock:
                handles = list(self.running.get(request_id, ()))
            for handle in handles:
                handle.abort()
            response = pb_utils.InferenceResponse(output_tensors=[])
        if sender is not None:
            sender.send(response, flags=FINAL)

    # ---------------------------------------------------------------------------------------------- generation

    async def generate(self, request, sender, prompts, params, loras, streaming, flags):
        request_id = request.request_id() if hasattr(request, "request_id") else ""
        handles = [self.llm.generate_async(p, sampling_params=s, lora_request=lora, streaming=streaming)
                   for p, s, lora in zip(prompts, params, loras, strict=True)]
        with self.lock:
            self.running.setdefault(request_id, set()).update(handles)
        watcher = asyncio.ensure_future(self.watch(request, handles))
        try:
            if streaming:
                async for out in handles[0]:
                    response = self.response([out], flags, delta=True)
                    if out.finished:
                        sender.send(response, flags=FINAL)
                        return None
                    sender.send(response)
                sender.send(flags=FINAL)  # the iterator ended without a finished output
                return None
            finals = [await h.aresult() for h in handles]
            response = self.response(finals, flags, delta=False)
        except Exception as err:
            code = pb_utils.TritonError.CANCELLED if request.is_cancelled() else pb_utils.TritonError.INTERNAL
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"Error generating request: {err}", code))
            if sender is not None:
                sender.send(response, flags=FINAL)
            return response
        finally:
            watcher.cancel()
            with self.lock:
                self.running.get(request_id, set()).difference_update(handles)
                if not self.running.get(request_id):
                    self.running.pop(request_id, None)
        if sender is not None:
            sender.send(response, flags=FINAL)
        return response

    async def watch(self, request, handles):
        """Abort the generations of a request whose client went away (checked every cancellation period)."""
        while True:
            await asyncio.sleep(self.check_period)
            if request.is_cancelled():
                for handle in handles:
                    handle.abort()
                return

    def response(self, results, flags, delta):
        outputs = [r.outputs[0] for r in results]
        texts = [(o.text_diff if delta else o.text) for o in outputs]
        tensors = [pb_utils.Tensor("text_output", np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_))]
        for flag, (name, attribute) in REASONS.items():
            if not flags.get(flag):
                continue
            if name == "cumulative_logprob":  # FP32, as the config declares (upstream's model.py sends text)
                logprobs = [getattr(o, attribute, None) for o in outputs]
                values = [[float("nan") if v is None else float(v)] for v in logprobs]
                tensors.append(pb_utils.Tensor(name, np.array(values, dtype=np.float32)))
                continue
            texts_of = [str(getattr(o, attribute, None)).encode() for o in outputs]
            tensors.append(pb_utils.Tensor(name, np.array([[v] for v in texts_of], dtype=np.object_)))
        if flags.get("return_num_input_tokens"):
            counts = [len(getattr(r, "prompt_token_ids", None) or ()) for r in results]
            tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[n] for n in counts], dtype=np.int32)))
        if flags.get("return_num_output_tokens"):
            ids = [(getattr(o, "token_ids_diff", None) if delta else getattr(o, "token_ids", None)) or ()
                   for o in outputs]
            tensors.append(pb_utils.Tensor("num_output_tokens", np.array([[len(i)] for i in ids], dtype=np.int32)))
        if not self.batched:
            tensors = [pb_utils.Tensor(t.name(), t.as_numpy()[0]) for t in tensors]
        return pb_utils.InferenceResponse(output_tensors=tensors)
