"""Requests to the `llm` ensemble (upstream TensorRT-LLM tensor names) and the `rag` ensemble, and their answers,
shared by both clients and the gateway.

The ensembles are decoupled (they stream), so gRPC requests go through Triton's bidirectional stream API even when
one response is wanted; the streams themselves (cancel, upstream stop, LoRA resend) are the access layer's
(:mod:`tritonforge.triton.streams`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from tritonforge.errors import InvalidInputError
from tritonforge.triton.tensors import text_of
from tritonforge.values import is_real, is_whole


@dataclass(frozen=True)
class Sampling:
    """Generation controls; None leaves the server's (upstream's) default."""

    max_tokens: int = 64
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    # added to a token's logit once it occurs (presence) and per occurrence (frequency), as TensorRT-LLM applies
    # them: counting the prompt's tokens as well as the output's
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop_words: Sequence[str] = ()
    bad_words: Sequence[str] = ()
    end_id: int | None = None
    pad_id: int | None = None
    chat: bool = False  # render the checkpoint's chat template around the prompt (tritonforge addition)
    adapter: str | None = None  # LoRA adapter name (served models that register adapters)

    def check(self) -> None:
        if not is_whole(self.max_tokens) or self.max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.temperature is not None and (not is_real(self.temperature) or self.temperature < 0):
            raise InvalidInputError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if self.top_k is not None and (not is_whole(self.top_k) or self.top_k < 0):
            raise InvalidInputError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if self.top_p is not None and (not is_real(self.top_p) or not 0 <= self.top_p <= 1):
            raise InvalidInputError(f"top_p must be in [0, 1], got {self.top_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None and not is_real(value):  # finite: NaN would poison every logit
                raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
        # the tensors these become: a larger value would wrap silently (or fail deep in numpy)
        if self.max_tokens > INT32_MAX:
            raise InvalidInputError(f"max_tokens must be <= {INT32_MAX}, got {self.max_tokens}")
        if self.top_k is not None and self.top_k > INT32_MAX:
            raise InvalidInputError(f"top_k must be <= {INT32_MAX}, got {self.top_k}")
        if self.seed is not None and (not is_whole(self.seed) or not 0 <= self.seed <= UINT64_MAX):
            raise InvalidInputError(f"seed must be in [0, {UINT64_MAX}] (an integer), got {self.seed!r}")
        for name in ("end_id", "pad_id"):  # token ids: INT32 tensors
            value = getattr(self, name)
            if value is not None and (not is_whole(value) or not 0 <= value <= INT32_MAX):
                raise InvalidInputError(f"{name} must be a token id, an integer in [0, {INT32_MAX}], got {value!r}")
        for name in ("stop_words", "bad_words"):
            words = getattr(self, name)
            if isinstance(words, str | bytes) or not isinstance(words, Sequence):
                raise InvalidInputError(f"{name} must be a list of strings, got {words!r}")
            for i, word in enumerate(words):
                if not isinstance(word, str):
                    raise InvalidInputError(f"{name}[{i}] is {type(word).__name__}, not str")
        if not isinstance(self.chat, bool):
            raise InvalidInputError(f"chat must be True or False, got {self.chat!r}")
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.adapter.strip()):
            raise InvalidInputError(f"adapter must be an adapter's name (non-empty str) or None, got {self.adapter!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any], **fixed: Any) -> Sampling:
        """Sampling from keyword arguments a caller passed through (``generate(prompt, **sampling)``): an unknown
        name is an InvalidInputError listing the allowed ones, not ``__init__``'s TypeError."""
        allowed = sorted(f.name for f in fields(cls))
        unknown = sorted(str(k) for k in options if k not in allowed)
        if unknown:
            raise InvalidInputError(
                f"unknown generation parameter{'s' * (len(unknown) > 1)} {', '.join(unknown)}; allowed: "
                f"{', '.join(allowed)}"
            )
        return cls(**{**options, **fixed})


INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1
MESSAGES_INPUT = "chat_messages"  # the llm ensemble's whole conversation for the chat template (tritonforge's)
ROLE_LABELS = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def chat_turns(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """A conversation checked and as templates take it: [{"role", "content"}], OpenAI's ``developer`` role as the
    ``system`` role chat templates know."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise InvalidInputError(
            f'messages must be a non-empty list of {{"role": ..., "content": ...}}, got {messages!r}')
    turns = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if role not in ROLE_LABELS or not isinstance(content, str):
            raise InvalidInputError(f"messages[{i}] must have a role ({', '.join(ROLE_LABELS)}) and a str content, "
                                    f"got {message!r}")
        turns.append({"role": "system" if role == "developer" else role, "content": content})
    return turns


def flattened(turns: Sequence[Mapping[str, str]]) -> str:
    """A conversation as one text: the last user message alone when it is the only turn, else each turn on its own
    paragraph as "<Role>: <text>". The prompt for an ensemble without chat_messages, and what limits count."""
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n\n".join(f"{ROLE_LABELS[t['role']]}: {t['content']}" for t in turns)


def declares_messages(config: Mapping[str, Any]) -> bool:
    """Whether a model's config (Triton's JSON form) declares chat_messages: llm ensembles built before tritonforge
    added it do not, and get a conversation flattened into one user turn."""
    return any(i.get("name") == MESSAGES_INPUT for i in config.get("input", []))


def chat_inputs(
    messages: Sequence[Mapping[str, Any]], sampling: Sampling, *, stream: bool, with_messages: bool = True
) -> dict[str, np.ndarray]:
    """Inputs of the `llm` ensemble for a conversation: chat_messages (rendered turn by turn by the checkpoint's chat
    template), with its flattened text as text_input (required by the contract); without ``with_messages`` (a model
    that does not declare them) the flattened text alone, as one user turn."""
    turns = chat_turns(messages)
    inputs = generation_inputs(flattened(turns), replace(sampling, chat=True), stream=stream)
    if with_messages:
        inputs[MESSAGES_INPUT] = _one(_utf8(json.dumps(turns, ensure_ascii=False), "messages"), object)
    return inputs


def _utf8(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidInputError(
            f"{field} is not valid Unicode ({err.reason} at {err.start}): send UTF-8 text"
        ) from None


def _one(value: Any, dtype: Any) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def generation_inputs(prompt: str, sampling: Sampling, *, stream: bool) -> dict[str, np.ndarray]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError(f"prompt must be a non-empty string, got {prompt!r}")
    sampling.check()
    inputs: dict[str, np.ndarray] = {
        "text_input": _one(_utf8(prompt, "prompt"), object),
        "max_tokens": _one(sampling.max_tokens, np.int32),
        "stream": _one(stream, bool),
    }
    optional = {
        "temperature": (sampling.temperature, np.float32),
        "top_k": (sampling.top_k, np.int32),
        "top_p": (sampling.top_p, np.float32),
        "seed": (sampling.seed, np.uint64),
        "presence_penalty": (sampling.presence_penalty, np.float32),
        "frequency_penalty": (sampling.frequency_penalty, np.float32),
        "end_id": (sampling.end_id, np.int32),
        "pad_id": (sampling.pad_id, np.int32),
    }
    for name, (value, dtype) in optional.items():
        if value is not None:
            inputs[name] = _one(value, dtype)
    for name, words in (("stop_words", sampling.stop_words), ("bad_words", sampling.bad_words)):
        if words:
            inputs[name] = np.array([[_utf8(w, name) for w in words]], dtype=object)
    if sampling.chat:
        inputs["apply_chat_template"] = _one(True, bool)
    if sampling.adapter is not None:
        inputs["lora_name"] = _one(_utf8(sampling.adapter, "adapter"), object)
    return inputs


# ---------------------------------------------------------------------------------------------- the rag ensemble


@dataclass(frozen=True)
class Source:
    """A passage the answer was given: its id and reranker score (best first)."""

    id: str
    score: float


_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def cited_ids(text: str) -> list[str]:
    """The passage ids ``text`` cites as the rag prompt asks: each in square brackets (``[p1]``, or in a group
    ``[p1, p3]``), in order of first citation. A bare mention is no citation, nor is an empty bracket."""
    found: list[str] = []
    for group in _BRACKETS.findall(text):
        for part in re.split(r"[,;\s]+", group.strip()):
            if part and part not in found:
                found.append(part)
    return found


@dataclass(frozen=True)
class RagAnswer:
    text: str
    sources: list[Source]
    prompt: str
    dropped: int  # passages left out: scored below min_score, or lowest-ranked first so the prompt fits max_input_len

    @property
    def citations(self) -> list[str]:
        """The ids the answer cites (:func:`cited_ids`)."""
        return cited_ids(self.text)

    @property
    def unsupported_citations(self) -> list[str]:
        """:func:`unsupported_citations` of this answer."""
        return unsupported_citations(self.text, self.sources)


def unsupported_citations(text: str, sources: Sequence[Source]) -> list[str]:
    """Ids ``text`` cites that are not among ``sources``, the passages it was given: made up by the LLM (a small
    model cites ids it saw in no prompt), for a caller that shows citations to drop or flag."""
    given = {s.id for s in sources}
    return [cited for cited in cited_ids(text) if cited not in given]


def rag_inputs(
    query: str,
    *,
    top_k: int | None,
    top_n: int | None,
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    stream: bool,
    min_score: float | None = None,
) -> dict[str, np.ndarray]:
    """Inputs of the `rag` ensemble: QUERY, optional TOP_K/TOP_N/MIN_SCORE, and the llm ensemble's generation
    controls."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"query must be a non-empty string, got {query!r}")
    for name in ("chat", "adapter", "presence_penalty", "frequency_penalty"):  # not among its inputs
        if sampling.get(name):
            raise InvalidInputError(f"{name} is not supported by the rag ensemble")
    # None: the rag model's default (a placeholder of 1 is checked, then dropped); 0 is refused like generate's
    inputs = generation_inputs(query, Sampling.of(sampling, max_tokens=1 if max_tokens is None else max_tokens),
                               stream=stream)
    del inputs["text_input"]
    if max_tokens is None:
        del inputs["max_tokens"]  # the rag model's default
    inputs["QUERY"] = _one(query.encode("utf-8"), object)
    for name, value in (("TOP_K", top_k), ("TOP_N", top_n)):
        if value is not None:
            if not is_whole(value) or not 1 <= value <= INT32_MAX:
                raise InvalidInputError(f"{name.lower()} must be an integer in [1, {INT32_MAX}], got {value!r}")
            inputs[name] = _one(value, np.int32)
    if min_score is not None:
        if not is_real(min_score):
            raise InvalidInputError(f"min_score must be a finite number, got {min_score!r}")
        inputs["MIN_SCORE"] = _one(float(min_score), np.float32)
    return inputs


class _RagParts:
    """Collects the sources wherever they come (the rag ensemble sends them in its first response)."""

    def __init__(self) -> None:
        self.sources: list[Source] | None = None
        self.prompt = ""
        self.dropped = 0

    def collect(self, result: Any) -> None:
        ids = result.as_numpy("SOURCE_IDS")
        if ids is None:
            return
        scores = result.as_numpy("SOURCE_SCORES")
        ids = np.asarray(ids).reshape(-1)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1) if scores is not None else np.full(len(ids), np.nan)
        self.sources = [
            Source(i.decode("utf-8") if isinstance(i, bytes) else str(i), float(score))
            for i, score in zip(ids, scores, strict=True)
            if i not in (b"", "")
        ]
        prompt, dropped = result.as_numpy("PROMPT"), result.as_numpy("PASSAGES_DROPPED")
        if prompt is not None:
            self.prompt = text_of({"text_output": prompt})
        if dropped is not None:
            self.dropped = int(np.asarray(dropped).reshape(-1)[0])


class RagStream:
    """Text pieces of a rag answer (iterate), with ``sources``, ``prompt`` and ``dropped`` filled as soon as they
    arrive: reading ``sources`` before iterating waits for the first response only (the first piece's)."""

    def __init__(self, start: Any) -> None:
        self._parts = _RagParts()
        self._pieces: Iterator[str] = start(self._parts.collect)
        self._buffer: list[str] = []

    def __iter__(self) -> RagStream:
        return self

    def __next__(self) -> str:
        if self._buffer:
            return self._buffer.pop(0)
        return next(self._pieces)

    def _wait(self) -> _RagParts:
        while self._parts.sources is None:
            try:
                self._buffer.append(next(self._pieces))
            except StopIteration:
                break
        return self._parts

    @property
    def sources(self) -> list[Source]:
        return self._wait().sources or []

    @property
    def prompt(self) -> str:
        return self._wait().prompt

    @property
    def dropped(self) -> int:
        return self._wait().dropped

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def answer(self) -> RagAnswer:
        """Read the rest of the stream: the whole answer."""
        text = "".join(self)
        parts = self._wait()
        return RagAnswer(text, parts.sources or [], parts.prompt, parts.dropped)


class AsyncRagStream:
    """The async :class:`RagStream`: ``async for piece in stream``; ``await stream.wait_sources()``."""

    def __init__(self, start: Any) -> None:
        self._parts = _RagParts()
        self._pieces = start(self._parts.collect)
        self._buffer: list[str] = []

    def __aiter__(self) -> AsyncRagStream:
        return self

    async def __anext__(self) -> str:
        if self._buffer:
            return self._buffer.pop(0)
        return await self._pieces.__anext__()

    async def wait_sources(self) -> list[Source]:
        while self._parts.sources is None:
            try:
                self._buffer.append(await self._pieces.__anext__())
            except StopAsyncIteration:
                break
        return self._parts.sources or []

    @property
    def sources(self) -> list[Source] | None:
        return self._parts.sources

    @property
    def prompt(self) -> str:
        return self._parts.prompt

    @property
    def dropped(self) -> int:
        return self._parts.dropped

    async def aclose(self) -> None:
        await self._pieces.aclose()

    async def answer(self) -> RagAnswer:
        text = "".join([p async for p in self])
        await self.wait_sources()
        return RagAnswer(text, self._parts.sources or [], self._parts.prompt, self._parts.dropped)
