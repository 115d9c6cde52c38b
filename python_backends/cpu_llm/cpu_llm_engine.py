"""The CPU engine's scheduler (tritonforge): iteration-level batching of the running sequences over one transformers
model, prefill of newcomers merged into the running batch's KV cache, sampling, stop conditions, cancellation.

A module of the `cpu_llm` python-backend model: shipped next to its model.py (which loads it by path), imports only
what a Triton container has plus torch/transformers. See model.py's docstring for the contract.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import triton_python_backend_utils as pb_utils

FINAL = getattr(pb_utils, "TRITONSERVER_RESPONSE_COMPLETE_FINAL", 1)


class RequestError(Exception):
    """A problem with one request: answered with an error response to that request only."""

    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = pb_utils.TritonError.INVALID_ARG if code is None else code


def _error_code(name: str) -> Any:
    return getattr(pb_utils.TritonError, name, pb_utils.TritonError.INTERNAL)


def _log(level: str, message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        getattr(logger, f"log_{level}", logger.log_info)(message)
    else:
        print(f"[cpu_llm] {level}: {message}", flush=True)


def _stall_limit(text: str) -> float:
    """TRITONFORGE_SEND_STALL_S: seconds > 0, or inf (never); anything else is logged and the default kept (0 ended
    the stub on any send, a negative value silently stopped the watch)."""
    try:
        limit = float(text)
    except ValueError:
        limit = float("nan")
    if not limit > 0:
        _log("warn", f"TRITONFORGE_SEND_STALL_S={text!r} is not a number of seconds > 0 (or inf): 30 s it is")
        return 30.0
    return limit


SEND_STALL_S = _stall_limit(os.environ.get("TRITONFORGE_SEND_STALL_S", "30"))


class _SendWatch:
    """Sends that never return. A decoupled response is handed to the server, which acknowledges it; when the
    request's caller is gone (the stub of a BLS model that called this engine was killed), no acknowledgement came,
    the one scheduler thread waited forever, and the engine answered nothing more while the model stayed READY
    (robustness audit). A send blocked SEND_STALL_S (a normal one takes microseconds; the client's own pace never
    blocks it) ends this stub, so that it is restarted (`tritonforge serve`'s watchdog reloads the model): its
    requests then fail, which clients and the gateway see as a reload, instead of every later one hanging."""

    def __init__(self, limit: float = SEND_STALL_S, exit_process: Callable[[int], object] = os._exit) -> None:
        self.limit, self.exit_process = limit, exit_process
        self.sending: dict[int, float] = {}  # thread id -> when its send began
        threading.Thread(target=self._watch, name="cpu-llm-send-watch", daemon=True).start()

    @contextlib.contextmanager
    def send(self) -> Iterator[None]:
        key = threading.get_ident()
        self.sending[key] = time.monotonic()
        try:
            yield
        finally:
            self.sending.pop(key, None)

    def _watch(self) -> None:
        if self.limit == float("inf"):
            return
        while True:
            time.sleep(min(1.0, self.limit / 4))
            began = min(self.sending.values(), default=None)
            if began is not None and time.monotonic() - began > self.limit:
                _log("error", f"a response send has been blocked for {self.limit:.0f} s (its request's caller is "
                              "gone?): ending this stub so that it is restarted")
                self.exit_process(70)
                return


# the engine's, made with it (sends from execute() and from the scheduler thread alike)
_SEND_WATCH: _SendWatch | None = None


def _guarded_send() -> contextlib.AbstractContextManager[None]:
    return _SEND_WATCH.send() if _SEND_WATCH is not None else contextlib.nullcontext()


class _Job:
    """One Triton request: its response sender and the sequences (one per batch item) generated for it."""

    def __init__(self, request: Any, sender: Any, request_id: str, streaming: bool, batch: int) -> None:
        self.request = request
        self.sender = sender
        self.request_id = request_id
        self.streaming = streaming
        self.batch = batch
        self.sequences: list[_Sequence] = []
        self.open = 0  # sequences not yet finished
        self.closed = False  # the FINAL flag has been sent
        self.stop_requested = False
        self.cancelled = False
        self.arrival_ns = time.time_ns()

    def is_cancelled(self) -> bool:
        # Never probe a closed request: once FINAL is sent Triton deletes the response factory, and probing it then
        # crashes the server (Triton 2.51: SIGSEGV in TRITONBACKEND_ResponseFactoryIsCancelled).
        if not self.cancelled and not self.closed:
            for probe in (getattr(self.sender, "is_cancelled", None), getattr(self.request, "is_cancelled", None)):
                if probe is not None:
                    try:
                        self.cancelled = bool(probe())
                    except Exception:  # an old python backend without cancellation support
                        continue
                    break
        return self.cancelled

    def send(self, response: Any = None, final: bool = False) -> bool:
        """Send (a response and/or) the FINAL flag; False once the sender is unusable (client gone)."""
        if self.closed:
            return False
        try:
            with _guarded_send():
                if final:
                    self.closed = True
                    if response is None:
                        self.sender.send(flags=FINAL)
                    else:
                        self.sender.send(response, flags=FINAL)
                else:
                    self.sender.send(response)
            return True
        except Exception as err:
            _log("warn", f"request '{self.request_id}': could not send a response ({err}); closing it")
            if not self.closed:  # still try to close it, so that Triton does not wait for it forever
                self.closed = True
                with contextlib.suppress(Exception):
                    self.sender.send(flags=FINAL)
            return False

    def fail(self, message: str, code: Any) -> None:
        for seq in self.sequences:
            seq.done = True
        self.open = 0
        self.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), final=True)


class _Sequence:
    """One prompt being generated, with its own sampling settings and state."""

    # set by model.py (TritonPythonModel._sequence, _job) and cpu_llm_llmapi.py after __init__; declared for the
    # type checker only (bare annotations: no class attribute is created, getattr(..., default) still sees none)
    max_new: int
    adapter: str | None
    end_ids: list[int]
    pad_id: int
    exclude_input: bool
    temperature: float
    top_k: int
    top_p: float | None
    greedy: bool
    min_tokens: int
    repetition: float
    presence: float
    frequency: float
    stop_words: list[list[int]]
    bad_words: list[list[int]]
    bias: Any  # torch tensor [vocab] or None
    return_log_probs: bool
    return_context_logits: bool
    return_generation_logits: bool
    return_perf_metrics: bool
    return_num_input_tokens: bool
    return_num_output_tokens: bool
    stop_strings: list[str]
    flags: dict[str, bool]
    finish_reason: str
    text_cut: int
    stop_reason: str
    text_sent: int
    tokens_sent: int

    def __init__(self, job: _Job, index: int, prompt: list[int]) -> None:
        self.job = job
        self.index = index
        self.prompt = prompt  # list of ints
        self.output: list[int] = []  # generated tokens (end_id excluded)
        self.done = False
        self.last_token: int | None = None  # sampled, not yet fed to the model
        self.next_pos = len(prompt)  # position of the next token fed to the model
        self.log_probs: list[float] = []
        self.gen_logits: list[Any] = []  # numpy arrays [vocab]
        self.context_logits: Any = None  # numpy array [prompt, vocab]
        self.first_scheduled_ns = self.first_token_ns = self.last_token_ns = 0
        self.counts: Any = None  # token counts over prompt + output, for the penalties
        self.generator: Any = None  # torch.Generator


class _Collector:
    """A response sender for a model that is not decoupled: keeps the response until FINAL."""

    def __init__(self) -> None:
        self.response: Any = None
        self.event = threading.Event()

    def send(self, response: Any = None, flags: int = 0) -> None:
        if response is not None:
            self.response = response
        if flags & FINAL:
            self.event.set()


# ------------------------------------------------------------------------------------------------------- model



def _kv_pairs(cache: Any) -> list[tuple[Any, Any]]:
    """[(keys, values)] per layer of a transformers cache (5.x `layers`, or 4.x key_cache/value_cache)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


def _cache_keyword(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in recent transformers 5.x (5.25 warns that
    ``past_key_values`` is removed in 5.40), ``past_key_values`` in earlier releases."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The cache a forward pass returned, under either name (see _cache_keyword)."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def _set_kv_pairs(cache: Any, pairs: list[tuple[Any, Any]]) -> None:
    if hasattr(cache, "layers"):
        for layer, (k, v) in zip(cache.layers, pairs, strict=True):
            layer.keys, layer.values = k, v
    else:
        cache.key_cache = [k for k, _ in pairs]
        cache.value_cache = [v for _, v in pairs]


def _ends_with(seq: _Sequence, word: list[int]) -> bool:
    """Whether prompt + output of ``seq`` ends with the token list ``word``."""
    n = len(word)
    if n <= len(seq.output):
        return seq.output[len(seq.output) - n:] == word
    if n > len(seq.prompt) + len(seq.output):
        return False
    return (seq.prompt[len(seq.prompt) - (n - len(seq.output)):] + seq.output) == word


class _Engine:
    """The scheduler thread and the running batch (see the module docstring)."""

    def __init__(self, owner: Any, threads: int) -> None:
        import torch
        from transformers import DynamicCache

        self.owner = owner
        self.model = owner.model
        self.peft = owner.peft
        self.torch = torch
        self.F = torch.nn.functional
        self.DynamicCache = DynamicCache
        self.cache_keyword = _cache_keyword(self.model)
        self.threads = threads
        self.cond = threading.Condition()
        self.waiting: deque[_Job] = deque()  # jobs not admitted yet
        self.admitted: list[_Job] = []  # jobs with sequences in the running batch
        self.running: list[_Sequence] = []  # sequences, in cache row order
        self.cache: Any = None
        self.mask: Any = None  # [B, T] long: 1 where the cache column holds a real token of that row
        self.stopping = False
        self.last_waiting_check = 0.0
        # the engine's own queue on Triton's metrics port (request_metrics.py): it takes every request at once, so
        # Triton's queue time stays near zero under an LLM burst and an autoscaler reading it never saw the backlog
        self.gauges = owner.request_gauges
        self.gauges.set(max=owner.max_batch)
        global _SEND_WATCH
        if _SEND_WATCH is None:
            _SEND_WATCH = _SendWatch()
        self.thread = threading.Thread(target=self._loop, name="cpu-llm-scheduler", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------------------------- from execute()

    def submit(self, jobs: list[_Job]) -> None:
        with self.cond:
            if self.stopping:
                raise RequestError("the model is being unloaded", pb_utils.TritonError.UNAVAILABLE)
            self.waiting.extend(jobs)
            self.cond.notify()

    def request_stop(self, request_id: str) -> bool:
        with self.cond:
            found = False
            for job in [*self.waiting, *self.admitted]:
                if job.request_id == request_id and not job.closed:
                    job.stop_requested = True
                    found = True
            self.cond.notify()
            return found

    def shutdown(self, timeout: float = 30.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join(timeout)

    # -------------------------------------------------------------------------------------------- the loop

    def _publish_backlog(self) -> None:
        """waiting: not admitted into the running batch yet; active and scheduled: admitted (every admitted request
        runs each iteration here). Called under self.cond."""
        admitted = len(self.admitted)
        self.gauges.set(waiting=len(self.waiting), active=admitted, scheduled=admitted)

    def _loop(self) -> None:
        torch = self.torch
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            while True:
                with self.cond:
                    self._publish_backlog()
                    while not self.stopping and not self.waiting and not self.running:
                        self.cond.wait()
                        self._publish_backlog()
                    if self.stopping:
                        break
                    new_jobs = []
                    room = self.owner.max_batch - len(self.running)
                    while self.waiting and room > 0:
                        job = self.waiting[0]
                        if len(job.sequences) > room and self.running:
                            break  # wait for room for the whole request
                        self.waiting.popleft()
                        new_jobs.append(job)
                        room -= len(job.sequences)
                    self.admitted.extend(new_jobs)
                    self._publish_backlog()
                try:
                    self._iteration(new_jobs)
                except Exception as err:
                    _log("error", f"generation failed: {type(err).__name__}: {err}")
                    for seq in self.running:
                        seq.job.fail(f"generation failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL)
                    for job in new_jobs:
                        job.fail(f"generation failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL)
                    self.running, self.cache, self.mask = [], None, None
                    self._forget_closed_jobs()
        with self.cond:
            left = list(self.waiting) + self.admitted
            self.waiting.clear()
        for job in left:
            job.fail("the model was unloaded before the request finished", pb_utils.TritonError.UNAVAILABLE)

    def _iteration(self, new_jobs: list[_Job]) -> None:
        # 1. cancelled (client gone) and stopped (stop=true) requests: running ones every iteration, queued ones
        #    every 100 ms (each check is a round trip to the Triton process)
        now = time.monotonic()
        if now - self.last_waiting_check > 0.1:
            self.last_waiting_check = now
            with self.cond:
                waiting = list(self.waiting)
            for job in waiting:
                if job.is_cancelled() or job.stop_requested:
                    with self.cond:
                        if job in self.waiting:
                            self.waiting.remove(job)
                    self._end_early(job)
        running_jobs = {id(s.job): s.job for s in self.running}
        for job in running_jobs.values():
            if job.is_cancelled() or job.stop_requested:
                self._end_early(job)
        fresh = []
        for job in new_jobs:
            if job.is_cancelled() or job.stop_requested:
                self._end_early(job)
            else:
                fresh.extend(job.sequences)
        self._retire()

        # 2. prefill the newcomers together, merge them into the running batch
        if fresh:
            self._prefill(fresh)
        # 3. one decode step for every running sequence
        if self.running:
            self._decode()
        self._forget_closed_jobs()

    def _forget_closed_jobs(self) -> None:
        with self.cond:
            self.admitted = [job for job in self.admitted if not job.closed]

    def _end_early(self, job: _Job) -> None:
        """A cancelled request gets a CANCELLED error + FINAL; a stopped one (stop=true) what it has so far."""
        if job.cancelled:
            generated = sum(len(seq.output) for seq in job.sequences)
            _log("info", f"request '{job.request_id}' was cancelled after {generated} generated tokens: stopped")
            for seq in job.sequences:
                seq.done = True
            job.open = 0
            job.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                "the request was cancelled", _error_code("CANCELLED"))), final=True)
            return
        generated = sum(len(seq.output) for seq in job.sequences)
        _log("info", f"request '{job.request_id}' was stopped (stop=true) after {generated} generated tokens")
        for seq in job.sequences:
            self._finish(seq)

    # ----------------------------------------------------------------------------------------- forward passes

    def _prefill(self, seqs: list[_Sequence]) -> None:
        torch = self.torch
        lengths = [len(s.prompt) for s in seqs]
        width = max(lengths)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - lengths[i]:] = torch.tensor(s.prompt, dtype=torch.long)
            mask[i, width - lengths[i]:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        want_context = any(s.return_context_logits for s in seqs)
        started = time.time_ns()
        for s in seqs:
            s.first_scheduled_ns = started
        cache = self.DynamicCache()
        out = self._forward(seqs, input_ids=ids, attention_mask=mask, position_ids=positions,
                            **{self.cache_keyword: cache}, use_cache=True, logits_to_keep=0 if want_context else 1)
        logits = out.logits
        for i, s in enumerate(seqs):
            if s.return_context_logits:
                s.context_logits = logits[i, width - lengths[i]:, :].float().numpy().copy()
        last = logits[:, -1, :].float()
        self._merge(seqs, _output_cache(out), mask)
        self._sample_and_accept(seqs, last)
        self._retire()

    def _decode(self) -> None:
        torch = self.torch
        seqs = self.running
        ids = torch.tensor([[s.last_token] for s in seqs], dtype=torch.long)
        positions = torch.tensor([[s.next_pos] for s in seqs], dtype=torch.long)
        self.mask = torch.cat([self.mask, torch.ones((len(seqs), 1), dtype=torch.long)], dim=1)
        out = self._forward(seqs, input_ids=ids, attention_mask=self.mask, position_ids=positions,
                            **{self.cache_keyword: self.cache}, use_cache=True, logits_to_keep=1)
        self.cache = _output_cache(out)
        for s in seqs:
            s.next_pos += 1
        self._sample_and_accept(seqs, out.logits[:, -1, :].float())
        self._retire()

    def _forward(self, seqs: list[_Sequence], **inputs: Any) -> Any:
        """One forward pass over ``seqs`` (one row each): the plain model, or with LoRA adapters one adapter name
        per row (peft's mixed-adapter batch), adapters disabled when every row is a base-model row."""
        if self.peft is None:
            return self.model(**inputs)
        names = [s.adapter or "__base__" for s in seqs]
        if all(n == "__base__" for n in names):
            with self.peft.disable_adapter():
                return self.model(**inputs)
        return self.peft(**inputs, adapter_names=names)

    def _merge(self, seqs: list[_Sequence], cache: Any, mask: Any) -> None:
        if not self.running:
            self.running, self.cache, self.mask = list(seqs), cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def left_pad(x: Any, columns_dim: int) -> Any:
            missing = width - x.shape[columns_dim]
            if not missing:
                return x
            pad = [0, 0] * (x.dim() - 1 - columns_dim) + [missing, 0]
            return self.F.pad(x, pad)

        merged = []
        for (k0, v0), (k1, v1) in zip(_kv_pairs(self.cache), _kv_pairs(cache), strict=True):
            merged.append((self.torch.cat([left_pad(k0, 2), left_pad(k1, 2)], dim=0),
                           self.torch.cat([left_pad(v0, 2), left_pad(v1, 2)], dim=0)))
        _set_kv_pairs(self.cache, merged)
        self.mask = self.torch.cat([left_pad(self.mask, 1), left_pad(mask, 1)], dim=0)
        self.running = self.running + list(seqs)

    def _retire(self) -> None:
        """Drop finished sequences' cache rows and the cache columns no remaining row uses."""
        keep = [i for i, s in enumerate(self.running) if not s.done]
        if len(keep) == len(self.running):
            return
        if not keep:
            self.running, self.cache, self.mask = [], None, None
            return
        index = self.torch.tensor(keep, dtype=self.torch.long)
        mask = self.mask.index_select(0, index)
        used = (mask.sum(dim=0) > 0).nonzero()
        first = int(used[0]) if used.numel() else 0
        pairs = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
                 for k, v in _kv_pairs(self.cache)]
        _set_kv_pairs(self.cache, pairs)
        self.mask = mask[:, first:]
        self.running = [self.running[i] for i in keep]

    # ---------------------------------------------------------------------------------------------- sampling

    def _sample_and_accept(self, seqs: list[_Sequence], logits: Any) -> None:
        torch = self.torch
        now = time.time_ns()
        for i, s in enumerate(seqs):
            if s.done:
                continue
            raw = logits[i]
            try:
                token, chosen = self._sample(s, raw)
            except Exception as err:
                # one request's settings (a penalty of -3e38, say) gave no distribution to draw from: that request
                # fails, and the others in the batch go on (the loop's handler would have failed them all)
                _log("warn", f"request '{s.job.request_id}': sampling failed: {type(err).__name__}: {err}")
                s.job.fail(f"sampling failed for this request's settings: {err}", pb_utils.TritonError.INVALID_ARG)
                continue
            log_prob = float(torch.log_softmax(chosen, dim=-1)[token]) if s.return_log_probs else None
            self._accept(s, token, now, raw, log_prob)

    def _sample(self, s: _Sequence, raw: Any) -> tuple[int, Any]:
        """(the token, the logits it was drawn from) for one sequence's row of logits."""
        torch = self.torch
        row = self._process(s, raw)
        if s.greedy:
            token = int(row.argmax())
            chosen = row
        else:
            chosen = row / s.temperature
            filtered = chosen
            if 0 < s.top_k < filtered.shape[-1]:
                kth = torch.topk(filtered, s.top_k).values[-1]
                filtered = filtered.masked_fill(filtered < kth, float("-inf"))
            if s.top_p is not None and s.top_p < 1.0:
                ordered, order = torch.sort(filtered, descending=True)
                probs = torch.softmax(ordered, dim=-1)
                before = torch.cumsum(probs, dim=-1) - probs
                drop = before >= s.top_p
                drop[0] = False
                filtered = filtered.clone()
                filtered[order[drop]] = float("-inf")
            probs = torch.softmax(filtered, dim=-1)
            if not bool(torch.isfinite(probs).all()):
                raise ValueError(
                    f"the logits after temperature={s.temperature}, presence_penalty={s.presence}, "
                    f"frequency_penalty={s.frequency}, repetition_penalty={s.repetition} are not finite"
                )
            token = int(torch.multinomial(probs, 1, generator=s.generator))
        return token, chosen

    def _process(self, s: _Sequence, row: Any) -> Any:
        """Bias, penalties, min_tokens and bad words applied to one row of logits (a new tensor if changed)."""
        torch = self.torch
        changed = False
        if s.bias is not None:
            row = row + s.bias
            changed = True
        if s.counts is not None:
            if not changed:
                row = row.clone()
                changed = True
            seen = s.counts > 0
            if s.repetition != 1.0:
                row = torch.where(seen, torch.where(row > 0, row / s.repetition, row * s.repetition), row)
            if s.presence:
                row = row - s.presence * seen.float()
            if s.frequency:
                row = row - s.frequency * s.counts
        banned = []
        if s.end_ids and len(s.output) < s.min_tokens:
            banned.extend(s.end_ids)
        for word in s.bad_words:
            if len(word) == 1 or _ends_with(s, word[:-1]):
                banned.append(word[-1])
        if banned:
            if not changed:
                row = row.clone()
            row[torch.tensor(banned, dtype=torch.long)] = float("-inf")
        return row

    def _accept(self, s: _Sequence, token: int, now: int, raw_logits: Any, log_prob: float | None) -> None:
        if not s.first_token_ns:
            s.first_token_ns = now
        s.last_token_ns = now
        if token in s.end_ids:
            s.finish_reason = "stop"
            self._finish(s)
            return
        s.output.append(token)
        s.last_token = token
        if s.counts is not None:
            s.counts[token] += 1
        if log_prob is not None:
            s.log_probs.append(log_prob)
        if s.return_generation_logits:
            s.gen_logits.append(raw_logits.numpy().copy())
        job = s.job
        hit_text_stop = bool(getattr(s, "stop_strings", None)) and self.owner.text.stop_string_hit(s)
        if job.streaming:
            response = self.owner.response_for(
                s, [token], s.log_probs[-1:], s.gen_logits[-1:], include_context=len(s.output) == 1)
            if response is not None and not job.send(response):
                for other in job.sequences:
                    other.done = True
                return
        hit_stop = hit_text_stop or any(_ends_with(s, word) for word in s.stop_words)
        if hit_stop:
            s.finish_reason = "stop"
            self._finish(s)
        elif len(s.output) >= s.max_new or len(s.prompt) + len(s.output) >= self.owner.max_seq_len:
            s.finish_reason = "length"
            self._finish(s)

    def _finish(self, s: _Sequence) -> None:
        if s.done:
            return
        s.done = True
        job = s.job
        job.open -= 1
        last = job.open <= 0
        if job.closed:
            return
        if job.streaming:
            if self.owner.llmapi and getattr(s, "finish_reason", None) is not None:
                rest = self.owner.response_for(s, [], [], [], include_context=False)  # text held back, reasons
                if rest is not None:
                    job.send(rest)
            if last:
                job.send(final=True)
            return
        tokens = s.output if s.exclude_input else s.prompt + s.output
        response = self.owner.response_for(s, tokens, s.log_probs, s.gen_logits, include_context=True)
        job.send(response, final=last)
