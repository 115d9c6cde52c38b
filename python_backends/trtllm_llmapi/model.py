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
PyYAML, tensorrt_llm, triton_python_backend_utils and request_metrics.py (shipped beside it) are imported, never
tritonforge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import queue
import threading
from collections.abc import Mapping
from typing import Any

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


def _load_sibling(name: str) -> Any:
    """A module shipped next to this model.py (python_backends.SHARED), loaded by path: neither Triton's sys.path nor
    another model's module of the same name decides which file it is."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Backlog:
    """The LLM's own queue on Triton's metrics port (request_metrics.py, shared with the CPU engine: what the engine
    path's C++ backend publishes, and deploy's autoscaler reads): ``waiting`` (queued, and paused by the scheduler),
    ``active``, ``scheduled`` and ``max``, from the LLM API's iteration statistics
    (``LLM(enable_iter_perf_stats=True)``; their JSON fields: NVIDIA/TensorRT-LLM
    cpp/tensorrt_llm/executor/jsonSerialization.cpp @ 092229bb6e1ce6e7f0db2ba010b7fdaf654e1549). The model takes
    every request at once, so Triton's queue time stayed near zero however many waited in the LLM's queue, and an
    autoscaler never saw them. Best effort: without custom metrics or statistics it only leaves them out."""

    def __init__(self, model: str, version: str) -> None:
        metrics = _load_sibling("request_metrics")
        self.types = metrics.TYPES
        self.gauges = metrics.request_gauges(
            pb_utils, model, version, lambda message: print(f"[trtllm_llmapi] {message}", flush=True))
        self.iteration: int | None
        self.totals: dict[str, int]
        self.iteration, self.totals = None, {}  # the iteration being gathered (see publish)

    def publish(self, stat: Any) -> None:
        """One row of an iteration's statistics (a dict, or its JSON text). With attention data parallelism an
        iteration comes as one row per rank (the same ``iter``; NVIDIA/TensorRT-LLM
        tensorrt_llm/executor/iteration_stats.py @ b11790149e0e12e52ea82ed7a4d51b51ea98dce6): the gauges carry the
        iteration's sums, set once it is complete (the next iteration's first row, or :meth:`flush` at the end of
        a read), never one rank's part of it."""
        if isinstance(stat, (str, bytes)):
            stat = json.loads(stat)
        iteration = stat.get("iter")
        if self.totals and (iteration is None or iteration != self.iteration):
            self.flush()
        if not self.totals:
            self.iteration, self.totals = iteration, dict.fromkeys(self.types, 0)
        inflight = stat.get("inflightBatchingStats") or {}
        self.totals["waiting"] += int(stat.get("numQueuedRequests", 0)) + int(inflight.get("numPausedRequests", 0))
        self.totals["active"] += int(stat.get("numActiveRequests", 0))
        self.totals["scheduled"] += int(inflight.get("numScheduledRequests", stat.get("numActiveRequests", 0)))
        self.totals["max"] += int(stat.get("maxNumActiveRequests", 0))

    def flush(self) -> None:
        """The iteration gathered so far onto the gauges."""
        if self.totals:
            self.gauges.set(**self.totals)
            self.totals = {}

    async def follow(self, llm: Any, started: asyncio.Event) -> None:
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
            self.flush()  # the read's last iteration
            empty = 0 if got else empty + 1
            if empty == IDLE_READS:
                self.gauges.set(waiting=0, active=0, scheduled=0)
            await asyncio.sleep(STATS_PERIOD_S)


# What `mpirun` puts in the environment of the process it starts as a rank: that process's place in the MPI job
# (world size and rank, the application context), the PMIx/PMI namespace, rank and server to connect to, and the
# ORTE runtime's state. deploy launches tritonserver as rank 0 of `mpirun -n 1` for an llmapi model (as upstream's
# launch_triton_server.py does); this python-backend stub is tritonserver's child and inherits all of it. When the
# LLM API then initialises MPI here, to spawn its executor workers, it takes itself for that rank of mpirun's job
# and registers with mpirun's PMIx server under tritonserver's identity instead of starting a job of its own, and
# the spawn fails or hangs. Upstream's llmapi model.py clears the same kind of variables before importing
# tensorrt_llm (NVIDIA/TensorRT-LLM triton_backend/all_models/llmapi/tensorrt_llm/1/model.py
# @ 044a90d209e380c95e23e8ae42f3583fa05ada78); settings (OMPI_MCA_*, PMIX_MCA_*, ...) are kept: they configure MPI,
# they do not name a job.
MPI_JOB_VARIABLES = frozenset({
    "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_NODE_RANK", "OMPI_UNIVERSE_SIZE", "OMPI_FIRST_RANKS", "OMPI_APP_CTX_NUM_PROCS",
    "PMIX_RANK", "PMIX_NAMESPACE", "PMIX_SERVER_URI", "PMIX_SERVER_URI2", "PMIX_SERVER_URI21", "PMIX_SERVER_URI3",
    "PMIX_SERVER_TMPDIR", "PMIX_SYSTEM_TMPDIR", "PMIX_SECURITY_MODE", "PMIX_GDS_MODULE",
    "PMIX_BFROPS_MODULE", "PMIX_PTL_MODULE", "PMIX_VERSION", "PMIX_HOSTNAME",
    "PMI_RANK", "PMI_SIZE", "PMI_FD", "PMI_SPAWNED", "PMI_APPNUM",
})
MPI_JOB_PREFIXES = ("OMPI_MCA_orte_", "ORTE_")  # the ORTE runtime's state, not configuration


def clear_inherited_mpi_job(environ: Any = None) -> list[str]:
    """Remove the MPI job's variables (MPI_JOB_VARIABLES, MPI_JOB_PREFIXES) from ``environ`` (os.environ by
    default) before tensorrt_llm initialises MPI; returns the names removed, sorted."""
    env = os.environ if environ is None else environ
    removed = sorted(k for k in env if k in MPI_JOB_VARIABLES or k.startswith(MPI_JOB_PREFIXES))
    for key in removed:
        del env[key]
    return removed


def _resolve(path: str, version_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.join(version_dir, path)


def read_model_yaml(version_dir: str) -> tuple[dict[str, Any], dict[str, Any]]:
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


def _rows(arrays: Mapping[str, np.ndarray], name: str, batch: int) -> list[Any]:
    """Per batch item: the value of an optional scalar input, or None."""
    value = arrays.get(name)
    if value is None or value.size == 0:
        return [None] * batch
    flat = value.reshape(value.shape[0], -1)
    items = [flat[i if flat.shape[0] > i else 0][0] for i in range(batch)]
    return [v.item() if hasattr(v, "item") else v for v in items]  # strings arrive as bytes objects


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Reply:
    """One request's answer: a decoupled request's sender (None otherwise), closed by its FINAL response (its own,
    or a stop's or cancellation's), and whether a stop or the client cancelled it."""

    __slots__ = ("cancelled", "closed", "lock", "sender")

    def __init__(self, sender: Any) -> None:
        self.sender, self.closed, self.cancelled = sender, False, False
        self.lock = threading.Lock()


def _cancelled() -> Any:
    """The answer to a request a stop or its client cancelled (upstream's words and code)."""
    return pb_utils.InferenceResponse(
        error=pb_utils.TritonError("Request cancelled by client", pb_utils.TritonError.CANCELLED))


def _report_failure(future: concurrent.futures.Future[Any]) -> None:
    """A generation that failed outside its own handling (a bug): logged, not lost in an unread future."""
    if not future.cancelled() and future.exception() is not None:
        print(f"[trtllm_llmapi] a request failed unanswered: {future.exception()!r}", flush=True)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.config = json.loads(args["model_config"])
        self.version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        self.llm_args, triton_config = read_model_yaml(self.version_dir)
        self.decoupled = bool(self.config.get("model_transaction_policy", {}).get("decoupled", False))
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        self.check_period = float(triton_config.get("cancellation_check_period_ms", 100)) / 1000.0
        cleared = clear_inherited_mpi_job()  # before tensorrt_llm (and mpi4py with it) is imported
        if cleared:
            print(f"[trtllm_llmapi] cleared the MPI job inherited from mpirun: {', '.join(cleared)}", flush=True)
        from tensorrt_llm import LLM, SamplingParams

        self.SamplingParams = SamplingParams
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="llmapi-loop")
        self.thread.start()
        self.llm = LLM(**self.llm_args)
        # request id -> its (request, id, generation handles, Reply) entries (for `stop`)
        self.running: dict[str, list[tuple[Any, str, list[Any], Reply]]] = {}
        # id(request) -> the same entry, while its request may be asked is_cancelled()
        self.watched: dict[int, tuple[Any, str, list[Any], Reply]] = {}
        self.lock = threading.Lock()
        # Triton's calls that wait on the parent process (a response's send, is_cancelled) run on threads of their
        # own, as in upstream's model.py: on the loop they held up every token of every other request meanwhile
        self.outbox: queue.SimpleQueue[tuple[Any, Any, int] | None] = queue.SimpleQueue()
        self.closing = threading.Event()
        self.sending = threading.Thread(target=self._send_loop, daemon=True, name="llmapi-send")
        self.sending.start()
        self.watching = threading.Thread(target=self._cancellation_loop, daemon=True, name="llmapi-cancel")
        self.watching.start()
        self.stats = None
        self.first_request = asyncio.Event()  # set on the loop (call_soon_threadsafe) at the first request
        if self.llm_args.get("enable_iter_perf_stats"):
            backlog = Backlog(self.config.get("name", args.get("model_name", "")), args["model_version"])
            if backlog.gauges.enabled:
                self.stats = asyncio.run_coroutine_threadsafe(backlog.follow(self.llm, self.first_request), self.loop)

    def finalize(self) -> None:
        stats = getattr(self, "stats", None)
        if stats is not None:
            stats.cancel()
            with contextlib.suppress(Exception):  # a turn of the loop for the reader to end before the loop stops
                asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), self.loop).result(2)
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.shutdown()
        if hasattr(self, "closing"):  # after the LLM: what its last generations queued is still sent
            self.closing.set()
            self.outbox.put(None)  # after the responses queued before it
            self.sending.join(timeout=10)
            self.watching.join(timeout=10)
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=10)
            if not loop.is_running():  # closed only once stopped: a loop stuck in a callback is left to exit
                loop.close()

    # ------------------------------------------------------------------------------------------------ requests

    def parse(self, request: Any) -> tuple[list[str], list[Any], list[Any], bool, dict[str, bool]]:
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
        flags = {name: bool(_rows(arrays, name, batch)[0] or False) for name in (*REASONS, *COUNTS)}
        params = []
        for i in range(batch):
            kwargs = {name: DEFAULTS.get(name) if values[name][i] is None else values[name][i] for name in SAMPLING}
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            if flags["return_cumulative_logprob"]:
                # the PyTorch backend computes log probabilities only when asked for some (return_log_probs =
                # bool(logprobs): NVIDIA/TensorRT-LLM tensorrt_llm/sampling_params.py
                # @ a98a9061d72f6fd39f5d055ebdd2c6878a100e2c); without them
                # cumulative_logprob was always NaN
                kwargs["logprobs"] = 1
            if stops is not None and stops.size:
                row = stops[i if stops.shape[0] > i else 0].reshape(-1)
                kwargs["stop"] = [_text(s) for s in row if _text(s)]
            try:
                params.append(self.SamplingParams(**kwargs))
            except (TypeError, ValueError) as err:
                raise RequestError(f"bad sampling parameters: {err}") from None
        loras = [self.lora_request(arrays, i, batch) for i in range(batch)]
        return prompts, params, loras, streaming, flags

    def lora_request(self, arrays: Mapping[str, np.ndarray], i: int, batch: int) -> Any:
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

    def execute(self, requests: list[Any]) -> list[Any] | None:
        if not self.first_request.is_set():  # the statistics reader waits for it (see Backlog.follow)
            self.loop.call_soon_threadsafe(self.first_request.set)
        results = []
        for request in requests:
            sender = request.get_response_sender() if self.decoupled else None
            try:
                parsed = self.parse(request)
            except Exception as err:  # a bad request gets its own error; the others are served
                message = str(err) if isinstance(err, RequestError) else f"{type(err).__name__}: {err}"
                # the caller's fault (INVALID_ARG, a 400 at the gateway), else this model's own (INTERNAL, a 500)
                bad = isinstance(err, (RequestError, ValueError))
                code = pb_utils.TritonError.INVALID_ARG if bad else pb_utils.TritonError.INTERNAL
                error = pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
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
            future.add_done_callback(_report_failure)
            results.append(future)
        if self.decoupled:
            return None
        # every request of the batch was submitted before waiting for one: the LLM batches them together
        return [r.result() if isinstance(r, concurrent.futures.Future) else r for r in results]

    def stop(self, request: Any, sender: Any) -> None:
        """Upstream's stop: the generations running under this request id are aborted and their requests answered
        at once with a CANCELLED final response (as upstream's handle_stop_request; waiting for the aborted
        iterator's own end could leave a streaming client waiting); the stop itself gets an empty final response."""
        request_id = request.request_id()
        if not request_id:
            response = pb_utils.InferenceResponse(
                error=pb_utils.TritonError("a request id must be provided for request cancellation",
                                           pb_utils.TritonError.INVALID_ARG))
        else:
            with self.lock:
                entries = list(self.running.get(request_id, ()))
            for entry in entries:
                with entry[3].lock:
                    self._cancel(entry)
            response = pb_utils.InferenceResponse(output_tensors=[])
        if sender is not None:
            sender.send(response, flags=FINAL)

    # ---------------------------------------------------------------------------------------------- generation

    async def generate(
        self,
        request: Any,
        sender: Any,
        prompts: list[str],
        params: list[Any],
        loras: list[Any],
        streaming: bool,
        flags: Mapping[str, bool],
    ) -> Any:
        """One request's generation(s); every outcome, a refusal included, reaches the client (decoupled: through
        the send thread, FINAL last; else as the returned response)."""
        request_id = request.request_id() if hasattr(request, "request_id") else ""
        reply = Reply(sender)
        handles = []
        try:
            for p, s, lora in zip(prompts, params, loras, strict=True):
                handles.append(self.llm.generate_async(p, sampling_params=s, lora_request=lora, streaming=streaming))
        except Exception as err:
            # refused before it ran: a prompt over max_num_tokens (ValueError, "The sum of prompt length ...", which
            # clients read as the context's limit), or "LLM is shutting down"; what a batch submitted before the
            # refused item is aborted, not left generating for nobody
            for handle in handles:
                handle.abort()
            code = pb_utils.TritonError.INVALID_ARG if isinstance(err, ValueError) else pb_utils.TritonError.UNAVAILABLE
            return self.emit(reply, pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), code)), FINAL)
        entry = (request, request_id, handles, reply)
        self.track(entry)
        final = None  # streaming: None when the iterator ended without a finished output (FINAL flag only)
        try:
            if streaming:
                async for out in handles[0]:
                    response = self.response([out], flags, delta=True)
                    if out.finished:
                        final = response
                        break
                    self.emit(reply, response)
            else:
                final = self.response([await h.aresult() for h in handles], flags, delta=False)
        except Exception as err:
            # not asked is_cancelled() here, on the loop: a stop or the cancellation thread has said so already
            code = pb_utils.TritonError.CANCELLED if reply.cancelled else pb_utils.TritonError.INTERNAL
            final = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"Error generating request: {err}", code))
        finally:
            # before FINAL is queued: the cancellation thread must not ask a finished request (Triton has released
            # it; 2.51 can crash on is_cancelled() then)
            self.untrack(entry)
        if reply.cancelled and reply.sender is None:  # not decoupled: a stopped request's partial text is no answer
            final = _cancelled()
        return self.emit(reply, final, FINAL)

    def emit(self, reply: Reply, response: Any, flags: int = 0) -> Any:
        """Queue ``response`` (None: flags only) for a decoupled request's send thread; nothing after its FINAL or
        a cancellation's. Returns it (a request that is not decoupled is answered by execute's return)."""
        if reply.sender is not None:
            with reply.lock:  # this request's only: held elsewhere just while the sweep asks about this request
                if reply.closed:
                    return response
                reply.closed = bool(flags & FINAL)
                self.outbox.put((reply.sender, response, flags))  # under the lock: in order with _cancel's
        return response

    def track(self, entry: tuple[Any, str, list[Any], Reply]) -> None:
        request, request_id, _, _ = entry
        with self.lock:
            self.running.setdefault(request_id, []).append(entry)
            self.watched[id(request)] = entry

    def untrack(self, entry: tuple[Any, str, list[Any], Reply]) -> None:
        request, request_id, _, _ = entry
        with self.lock:
            entries = self.running.get(request_id, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self.running.pop(request_id, None)
            self.watched.pop(id(request), None)

    def _cancel(self, entry: tuple[Any, str, list[Any], Reply]) -> None:
        """Called with the entry's reply.lock held: abort its generations and answer its request CANCELLED, once
        (a request that is not decoupled is answered by generate, which sees ``cancelled``)."""
        request, _, handles, reply = entry
        with self.lock:
            self.watched.pop(id(request), None)
        reply.cancelled = True
        if reply.sender is not None and not reply.closed:
            reply.closed = True
            self.outbox.put((reply.sender, _cancelled(), FINAL))
        for handle in handles:
            self.loop.call_soon_threadsafe(handle.abort)

    def _send_loop(self) -> None:
        """Sends queued responses in order (each request's FINAL after its others) until finalize."""
        while (item := self.outbox.get()) is not None:
            sender, response, flags = item
            try:
                if response is None:
                    sender.send(flags=flags)
                else:
                    sender.send(response, flags=flags)
            except Exception as err:  # the client went away, or Triton refused the response: the others go on
                print(f"[trtllm_llmapi] a response could not be sent: {err}", flush=True)

    def _cancellation_loop(self) -> None:
        """Aborts the generations of requests whose client went away, checked every cancellation period on one
        thread (not a watcher per request on the loop)."""
        while not self.closing.wait(self.check_period):
            with self.lock:
                watched = list(self.watched.values())
            for entry in watched:
                reply = entry[3]
                # under the request's own lock, and only while it is open: its FINAL is queued under that lock
                # with ``closed`` set, so it is never asked after Triton released it; the loop waits on this probe
                # only if it streams to this very request meanwhile
                with reply.lock:
                    if reply.closed or reply.cancelled:
                        continue
                    with contextlib.suppress(Exception):
                        if entry[0].is_cancelled():
                            self._cancel(entry)

    def response(self, results: list[Any], flags: Mapping[str, bool], delta: bool) -> Any:
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
