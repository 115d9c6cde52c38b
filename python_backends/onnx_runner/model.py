"""Triton python-backend model: runs `model.onnx` with ONNX Runtime on CPU (tritonforge, `cpu` target).

The `gpu` target serves the same `model.onnx` with Triton's onnxruntime backend; this runner keeps the same
tensor names, dtypes and parameters (`intra_op_thread_count`, `inter_op_thread_count`) so the ensemble above it
does not change between targets. On a gpu image without the onnxruntime backend (the -trtllm-python-py3 images) the
runner serves the checkpoint instead, with parameter `engine: torch` (torch_engine.py): same tensors, one padded call
per batch on the instance's GPU. The cpu target uses that engine too for `cpu_quantization: bf16` (`precision: bf16`,
bfloat16 weights for CPUs with AMX): on a CPU instance it runs the instance's threads and the length-sorted calls
below, as the ONNX Runtime sessions do.

Inputs are declared `allow_ragged_batch`, so the dynamic batcher may group requests whose shapes differ after
the batch axis (sequence length; for a cross-encoder also the number of candidates); they are zero-padded here to
one shape and run as ONE session call (padding is masked by attention_mask, so results do not depend on the batch
they were served in); a model with several 1-thread sessions splits that call's rows between them. Parameter
`unpad_output_axes` (e.g. "1") names output axes that follow the input axes of the same index and are cut back to
each request's own size (a cross-encoder's SCORES [batch, candidates]).

Rows of [rows, sequence] inputs with an `attention_mask` (an embedding encoder's) are not run as one padded call,
nor are the (query, passage) pairs of [rows, candidates, sequence] inputs (a cross-encoder's, one score per pair,
`unpad_output_axes: "1"`), each pair a row of its own, run as [1, pairs, sequence]:
the rows of every request in the batch are sorted by their length (the mask's sum) and cut into calls of at most
`max_rows_per_call` rows (default 16), each padded only to its own longest row, spread over one single-thread ONNX
Runtime session per thread of the instance. Where to cut is call_plan.py's: the cut with the least predicted cost
under a per-call cost fitted at load from a few timed calls (parameter `call_cost` gives it instead). Measured on a
2-core AVX2 CPU: sorted calls of 4 rows ran a batch of 16 rows 21% faster than one padded call (shorter padding,
activations that stay in the core's cache), the fitted cut another 4-6% at batch 20 and 9-14% at batch 64 (fewer calls,
each of which streams all the weights); two 1-thread sessions outran one 2-thread session at every batch size.
Results do not change: padding is masked. A cross-encoder gains most, its pairs being long and of every length:
MiniLM-sized, 20 passages of 4-16 sentences per query, served on a 2-core Zen 4, 1.86x the pairs/s of one padded
call per batch with 1 query in flight and 2.17x with 4 (tests/bench/probe_rerank_rows.py).

Parameter `cpu_affinity: instance` pins each CPU instance's stub to cores of its own (affinity.py), whichever
engine it runs; default none.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _token_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with a tokenized batch that ONNX Runtime would take without a word (robustness audit): a
    negative token id (its Gather wraps it to the end of the vocabulary), an attention mask other than 0/1, or
    sequences of no tokens (an all-zero embedding); None when nothing is."""
    for name in ("input_ids", "token_type_ids"):
        ids = arrays.get(name)
        if ids is not None and ids.size and int(ids.min()) < 0:
            return f"input '{name}' holds a negative token id ({int(ids.min())}): ids are 0 or more"
    mask = arrays.get("attention_mask")
    if mask is not None and mask.size and not np.isin(mask, (0, 1)).all():
        return "input 'attention_mask' holds values other than 0 and 1"
    if any(a.shape[-1] == 0 for a in arrays.values()):
        return "the sequences hold no tokens: give at least one per row"
    return None


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self._plan = _load_sibling("call_plan")  # call_cost's format, and the cuts of regrouped rows
        bad = _load_sibling("runner_parameters").problems(params, self._plan.parse)
        if bad:
            raise ValueError("; ".join(message for _, message in bad))
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.unpad_axes = [int(a) for a in params.get("unpad_output_axes", "").split(",") if a.strip()]
        instances = sum(max(1, int(g.get("count", 1))) for g in config.get("instance_group", [])) or 1

        # Split the cores this process may use (affinity, cgroup quota) between this model's instances instead of
        # letting each take all of them.
        intra = int(params.get("intra_op_thread_count") or 0)
        threads = intra if intra > 0 else max(1, _load_sibling("cores").available_cores() // instances)
        names = [name for name, _ in self.inputs]
        variable_outputs = any(-1 in [int(d) for d in o.get("dims", [])] for o in config["output"])
        # rows can be regrouped when they are [rows, sequence] with a mask and each output is one vector per row
        # (an encoder's), or [rows, candidates, sequence] with one score per (row, candidate) cut back to each
        # request's candidates (a cross-encoder's: its graph runs [1, pairs, sequence] as `pairs` rows)
        masked = "attention_mask" in names
        self.pairs = (
            masked and self.unpad_axes == [1] and len(config["output"]) == 1
            and all(len(i.get("dims", [])) == 2 for i in config["input"])
            and len(config["output"][0].get("dims", [])) == 1
        )
        self.regroup = masked and (self.pairs or (not self.unpad_axes and not variable_outputs))
        rows = int(params.get("max_rows_per_call") or 0)
        self.max_rows = rows if rows > 0 else 16
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        engine = params.get("engine", "onnxruntime").strip() or "onnxruntime"
        self.cores = self._pin(args, params, config, threads)
        if engine == "torch":
            self._init_torch(args, params, version_dir, threads)
            return
        import onnxruntime as ort  # only here: the images the torch engine is for have no onnxruntime

        path = os.path.join(version_dir, "model.onnx")

        def session(intra_threads: int) -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = intra_threads
            options.inter_op_num_threads = int(params.get("inter_op_thread_count") or 1)
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

        # Regrouped rows run as independent calls: `threads` one-thread sessions side by side beat one session of
        # `threads` threads (2 cores, AVX2: 17-20% more sentences/s); other models keep one multi-threaded session.
        self._serve_with([session(1) for _ in range(threads)] if self.regroup else [session(threads)], params)

    def _serve_with(self, sessions: list[Any], params: Mapping[str, str]) -> None:
        """The sessions (ONNX Runtime's, or the torch engine duck-typing `run`) that calls are spread over, and
        the call_plan cost when rows are regrouped; the same for either engine."""
        self.sessions = sessions
        self.session = sessions[0]
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for s in sessions:
            self._idle.put(s)
        self._pool = ThreadPoolExecutor(len(sessions)) if len(sessions) > 1 else None
        if self.regroup:
            self.call_cost = self._call_cost(params.get("call_cost", "auto"))

    def _call_cost(self, text: str) -> Callable[[int, int], float]:
        """The call_plan cost: given, or fitted on this instance's first session (call_plan.timing_feed). A model that
        cannot run those calls keeps the default cost and says why in the log."""
        if text.strip() != "auto":
            return self._plan.parse(text)
        session = self.sessions[0]

        def run(rows: int, width: int) -> None:
            feed = self._plan.timing_feed(self.inputs, rows, width)
            session.run(self.outputs, {name: a[None] for name, a in feed.items()} if self.pairs else feed)

        try:
            cost = self._plan.measure(run)
        except Exception as err:
            fallback = self._plan.DEFAULT
            pb_utils.Logger.log_warn(f"onnx_runner: could not time calls ({err}); using {fallback.describe()}")
            return fallback
        pb_utils.Logger.log_info(f"onnx_runner: call cost fitted at load: {cost.describe()}")
        return cost

    def _pin(
        self, args: dict[str, Any], params: Mapping[str, str], config: dict[str, Any], threads: int
    ) -> list[int] | None:
        """Parameter `cpu_affinity`: with "instance", a CPU instance's stub is pinned to cores of its own (affinity.py),
        whichever engine it runs; the cores, or None when not pinned."""
        affinity = params.get("cpu_affinity", "none").strip() or "none"  # checked by runner_parameters
        if affinity != "instance" or args.get("model_instance_kind", "CPU") != "CPU":
            return None
        if not hasattr(os, "sched_setaffinity"):
            pb_utils.Logger.log_warn("onnx_runner: cpu_affinity needs Linux's sched_setaffinity; not pinned")
            return None
        pinning = _load_sibling("affinity")
        index = pinning.instance_index(args["model_instance_name"], config.get("instance_group", []))
        cores = pinning.cores_for(index, threads, os.sched_getaffinity(0))
        pinned = pinning.pin_process(set(cores))
        pb_utils.Logger.log_info(f"onnx_runner: {args['model_instance_name']} pinned to cores {cores} "
                                 f"({pinned} threads)")
        return cores

    def _init_torch(self, args: dict[str, Any], params: Mapping[str, str], version_dir: str, threads: int) -> None:
        """PyTorch from `<version>/checkpoint/` (torch_engine.py): one module per instance. On the instance's GPU
        (KIND_GPU) a batch runs as one padded call, the shape a GPU wants; on the CPU the module runs `threads`
        intra-op threads and takes the length-sorted calls the ONNX Runtime sessions take (it duck-types
        `session.run`), e.g. bf16 weights on a CPU with AMX (`precision: bf16`, the cpu target's
        `cpu_quantization: bf16`)."""
        if len(self.outputs) != 1:
            raise ValueError(f"engine torch serves a model with one output, got {self.outputs}")
        kind = args.get("model_instance_kind", "CPU")
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu"
        engine = _load_sibling("torch_engine").TorchEncoder(os.path.join(version_dir, "checkpoint"), params, device)
        if device == "cpu":
            engine.torch.set_num_threads(threads)
        else:
            self.regroup = False
        pb_utils.Logger.log_info(
            f"onnx_runner: {args.get('model_instance_name', args.get('model_name', 'encoder'))} loaded engine torch "
            f"on {device}, precision {engine.precision} (weights {engine.dtype}), "
            + (f"{threads} intra-op threads, rows sorted by length" if device == "cpu" else "one padded call per batch")
        )
        if device == "cpu" and engine.precision == "bf16":  # built on one machine, served on another
            name = args.get("model_instance_name", args.get("model_name", "encoder"))
            if warning := _load_sibling("cores").emulated_bf16_warning(f"onnx_runner: {name}"):
                pb_utils.Logger.log_warn(warning)
        self._serve_with([engine], params)

    def finalize(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _read(self, request: Any) -> tuple[dict[str, np.ndarray] | None, str | None]:
        arrays = {}
        for name, dtype in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return None, f"missing input '{name}'"
            array = tensor.as_numpy()
            if array.ndim < 2 or array.shape[0] == 0:
                return None, f"input '{name}' must have shape [batch, ...] with a batch, got {list(array.shape)}"
            arrays[name] = array.astype(dtype, copy=False)
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1:
            return None, f"inputs must share one shape, got {sorted(shapes)}"
        return arrays, _token_problem(arrays)

    def execute(self, requests: list[Any]) -> list[Any]:
        read = [(None, err) if err else (a, None) for a, err in (self._read(r) for r in requests)]
        good = [a for a, err in read if a is not None]
        try:
            results: Iterator[dict[str, np.ndarray] | str] = iter(self._run(good) if good else [])
        except Exception:
            # one bad request (e.g. token ids out of the vocabulary) must not fail its neighbours: retry alone
            results = iter([self._run_alone(a) for a in good])
        responses = []
        for _arrays, error in read:
            outs = error or next(results)
            if isinstance(outs, str):
                err = pb_utils.TritonError(outs, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
            else:
                tensors = [pb_utils.Tensor(name, outs[name]) for name in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def _run_alone(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | str:
        try:
            return self._run([arrays])[0]
        except Exception as err:
            return f"ONNX Runtime failed on this request: {err}"

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        masks = (_rows(a["attention_mask"]) for a in batch)  # read only when the model regroups
        if self.regroup and all(len(m) and _right_padded(m) for m in masks):
            return self._run_by_length(batch)
        return self._run_padded(batch)

    def _run_by_length(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Every row of the batch, sorted by length, cut into calls by call_plan and spread over the sessions (longest
        calls first, so the last to finish is short); results in request order. With several sessions no call takes
        more than its share of the rows, so that every session gets one."""
        shapes = [a["attention_mask"].shape[:-1] for a in batch]  # (rows,) or (rows, candidates): how results go back
        batch = [{name: _rows(a) for name, a in arrays.items()} for arrays in batch]  # pairs: one row each
        lengths = np.concatenate([a["attention_mask"].sum(axis=1) for a in batch]).astype(np.int64)
        rows = [(i, r) for i, a in enumerate(batch) for r in range(a["attention_mask"].shape[0])]
        order = np.argsort(-lengths, kind="stable")
        share = -(-len(order) // len(self.sessions))
        cuts = self._plan.plan(lengths[order].tolist(), self.call_cost, min(self.max_rows, share))
        chunks = [order[start:stop] for start, stop in cuts]

        def call(chunk: np.ndarray) -> list[np.ndarray]:
            width = max(1, int(lengths[chunk].max()))
            feed = {}
            for name, dtype in self.inputs:
                block = np.zeros((len(chunk), width), dtype=dtype)
                for j, k in enumerate(chunk):
                    i, r = rows[k]
                    row = batch[i][name][r, :width]
                    block[j, : row.shape[0]] = row
                feed[name] = block
            if self.pairs:  # the graph takes [rows, candidates, sequence]: these pairs as one row's candidates
                feed = {name: block[None] for name, block in feed.items()}
            session = self._idle.get()
            try:
                values = session.run(self.outputs, feed)
            finally:
                self._idle.put(session)
            return [v[0] for v in values] if self.pairs else values

        done = self._pool.map(call, chunks) if self._pool is not None and len(chunks) > 1 else map(call, chunks)
        results: list[Any] = [None] * len(rows)  # every row is in one chunk: filled below
        for chunk, values in zip(chunks, list(done), strict=True):
            for j, k in enumerate(chunk):
                results[k] = [v[j] for v in values]
        out, k = [], 0
        for a, shape in zip(batch, shapes, strict=True):
            n = a["attention_mask"].shape[0]
            part = results[k : k + n]
            out.append({name: np.stack([r[o] for r in part]).reshape(shape + np.shape(part[0][o]))
                        for o, name in enumerate(self.outputs)})
            k += n
        return out

    def _run_padded(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        first = [next(iter(a.values())) for a in batch]
        target = tuple(max(f.shape[axis] for f in first) for axis in range(1, first[0].ndim))
        feed = {}
        for name, _ in self.inputs:
            parts = [
                np.pad(a[name], [(0, 0)] + [(0, t - s) for t, s in zip(target, a[name].shape[1:], strict=True)])
                for a in batch
            ]
            feed[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        values = self._run_rows_split(feed)
        out, start = [], 0
        for f in first:
            n = f.shape[0]
            result = {}
            for name, value in zip(self.outputs, values, strict=True):
                part = value[start : start + n]
                for axis in self.unpad_axes:
                    part = np.take(part, range(f.shape[axis]), axis=axis)
                result[name] = np.ascontiguousarray(part)
            out.append(result)
            start += n
        return out

    def _run_rows_split(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One padded feed; with several 1-thread sessions (a regrouped model given a batch it cannot cut, e.g.
        left-padded rows) its rows are split evenly between them, so no session idles while one runs the batch."""
        rows = next(iter(feed.values())).shape[0]
        parts = min(len(self.sessions), rows)
        if self._pool is None or parts < 2:
            return self.session.run(self.outputs, feed)
        bounds = np.linspace(0, rows, parts + 1).astype(int)

        def call(span: tuple[int, int]) -> list[np.ndarray]:
            session = self._idle.get()
            try:
                return session.run(self.outputs, {name: value[span[0] : span[1]] for name, value in feed.items()})
            finally:
                self._idle.put(session)

        done = list(self._pool.map(call, itertools.pairwise(bounds)))
        return [np.concatenate([values[o] for values in done]) for o in range(len(self.outputs))]


def _load_sibling(name: str) -> Any:
    """A module shipped next to this model.py, loaded by path so that no other model's module of that name is used.
    (cpu_llm's and retriever's model.py have the same helper: each shipped folder is copied alone, so the loader of
    shared modules cannot itself be shared.)"""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(array: np.ndarray) -> np.ndarray:
    """[rows, sequence], or [rows, candidates, sequence] as [rows * candidates, sequence] (one row per pair)."""
    return array.reshape(-1, array.shape[-1]) if array.ndim > 2 else array


def _right_padded(mask: np.ndarray) -> bool:
    """A [rows, sequence] mask whose ones all come first in each row: cutting a row to its length keeps its tokens."""
    if mask.ndim != 2:
        return False
    lengths = mask.sum(axis=1)
    return bool((mask == (np.arange(mask.shape[1])[None, :] < lengths[:, None])).all())
