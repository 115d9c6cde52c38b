"""Which Triton ensembles the gateway serves under which OpenAI model ids."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tritonforge.build_manifest import DEFAULT_ENGINE_MODEL, gateway_model_entries
from tritonforge.errors import OptionError
from tritonforge.gateway.splits import SplitsConfig

LOG = logging.getLogger(__name__)
SERVED_NAMES_SHOWN = 10  # model ids an unknown-model error lists at most


# ------------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class GatewayModels:
    """OpenAI model ids -> Triton ensembles, per kind. The defaults are the ``examples/rag.yaml`` spec keys.

    ``engine_models`` names the engine step of each chat ensemble (where the ``stop`` signal goes); a chat id not
    listed uses ``tensorrt_llm`` (upstream's name, and tritonforge's for an LLM served as ``llm``).
    """

    chat: Mapping[str, str] = field(default_factory=lambda: {"chat": "llm"})
    embeddings: Mapping[str, str] = field(default_factory=lambda: {"minilm": "embed"})
    rerank: Mapping[str, str] = field(default_factory=lambda: {"reranker": "rerank"})
    engine_models: Mapping[str, str | None] = field(default_factory=dict)
    embed_batch_size: int = 32  # texts per Triton request at most (and never above the ensemble's max_batch_size)
    embed_requests_in_flight: int = 2  # of one /v1/embeddings request's Triton requests (gateway/embeddings.py)
    # max_tokens of a request that sends none: chat 64 (a short answer), completions 16 (OpenAI's completions default)
    chat_max_tokens: int = 64
    completion_max_tokens: int = 16
    # an embeddings input over the model's length: cut to it (TEI's --auto-truncate) instead of a 400 naming it;
    # a request's own truncate_prompt_tokens: -1 asks for the cut either way
    auto_truncate: bool = False

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for kind in ("chat", "embeddings", "rerank"):
            for model_id, ensemble in getattr(self, kind).items():
                if not model_id or not ensemble:
                    raise OptionError(f"GatewayModels.{kind}: ids and ensembles must be non-empty ({model_id!r})")
                if model_id in seen:
                    raise OptionError(f"model id {model_id!r} is both {seen[model_id]} and {kind}")
                seen[model_id] = kind
        if self.embed_batch_size < 1:
            raise OptionError(f"embed_batch_size={self.embed_batch_size} must be >= 1")
        if self.embed_requests_in_flight < 1:
            raise OptionError(f"embed_requests_in_flight={self.embed_requests_in_flight} must be >= 1")
        for name in ("chat_max_tokens", "completion_max_tokens"):
            if not 1 <= getattr(self, name) <= 2**31 - 1:  # an INT32 tensor
                raise OptionError(f"{name}={getattr(self, name)} must be in [1, 2147483647]")

    def ids(self) -> list[tuple[str, str, str]]:
        """(id, kind, ensemble) of every configured model."""
        return [(i, kind, e) for kind in ("chat", "embeddings", "rerank") for i, e in getattr(self, kind).items()]

    def engine_model(self, model_id: str) -> str | None:
        return self.engine_models.get(model_id, DEFAULT_ENGINE_MODEL)

    def kind_of(self, model_id: str) -> str | None:
        return next((kind for i, kind, _ in self.ids() if i == model_id), None)

    def served_names(self, kind: str, limit: int = SERVED_NAMES_SHOWN) -> str:
        """The model ids served for ``kind`` (chat, embeddings, rerank) as an error message names them: sorted, at
        most ``limit`` then ``...``; ``none`` when there are none."""
        names = sorted(getattr(self, kind, {}))
        return ", ".join([*names[:limit], *(["..."] if len(names) > limit else [])]) or "none"

    @classmethod
    def parse(cls, entries: Collection[str]) -> GatewayModels:
        """From ``kind:id=ensemble`` strings (kind: chat, embeddings, rerank), e.g. ``chat:chat=llm``; a chat entry
        may name its ensemble's engine step, ``chat:chat=llm@chat_tensorrt_llm`` (default ``tensorrt_llm``)."""
        maps: dict[str, dict[str, str]] = {"chat": {}, "embeddings": {}, "rerank": {}}
        engines: dict[str, str | None] = {}
        for entry in entries:
            kind, _, rest = entry.partition(":")
            model_id, _, ensemble = rest.partition("=")
            ensemble, at, engine = ensemble.partition("@")
            if kind not in maps or not model_id or not ensemble or (at and (kind != "chat" or not engine)):
                raise OptionError(
                    f"{entry!r} is not kind:id=ensemble with kind chat, embeddings or rerank (chat: "
                    "kind:id=ensemble[@engine_model])"
                )
            maps[kind][model_id] = ensemble
            if engine:
                engines[model_id] = engine
        return cls(chat=maps["chat"], embeddings=maps["embeddings"], rerank=maps["rerank"], engine_models=engines)

    @classmethod
    def from_build_info(cls, info: Mapping[str, Any]) -> GatewayModels | None:
        """The models a build recorded in its tritonforge.json (``gateway_models``); None from a build that
        recorded none (before tritonforge recorded them) or that has none the gateway serves."""
        entries = gateway_model_entries(info)
        return cls.parse(entries) if entries else None

    def entries(self) -> list[str]:
        """The ``--model`` values that give these models back through ``parse`` (the build record's format)."""
        recorded = {"chat": self.chat, "embeddings": self.embeddings, "rerank": self.rerank,
                    "engine_models": self.engine_models}
        return gateway_model_entries({"gateway_models": recorded})


def split_problems(
    models: GatewayModels, config: SplitsConfig, adapters: Mapping[str, Collection[str]] | None = None
) -> list[str]:
    """What makes ``config`` unusable with these models: unknown arm models, arms of different kinds, adapters on
    non-chat arms, split names that shadow model ids (``splits.<name>...: message`` lines). ``adapters``: the LoRA
    adapter names of each chat model whose ensemble has been read (a gateway lists them as model ids too), so a
    split may not take an adapter's id and an arm may not name an adapter its model does not have."""
    problems = []
    adapters = adapters or {}
    kinds = {"chat": "chat", "embeddings": "embeddings", "rerank": "rerank"}
    known = ", ".join(sorted(i for i, _, _ in models.ids()))
    for name, spec in config.splits.items():
        if models.kind_of(name) is not None:
            problems.append(f"splits.{name}: the split name is already a model id ({models.kind_of(name)}); choose "
                            "another name")
        owner = next((chat for chat, names in adapters.items() if name in names), None)
        if owner is not None:
            problems.append(f"splits.{name}: the split name is already a model id (a LoRA adapter of {owner!r}); "
                            "choose another name")
        seen: set[str] = set()
        arms = [("control", spec.control)] + [(f"treatments[{i}]", a) for i, a in enumerate(spec.treatments)]
        for where, arm in arms:
            kind = models.kind_of(arm.model)
            if kind is None:
                problems.append(f"splits.{name}.{where}.model: {arm.model!r} is not a model id of this gateway "
                                f"(known: {known})")
                continue
            seen.add(kinds[kind])
            if arm.adapter is not None and kind != "chat":
                problems.append(f"splits.{name}.{where}.adapter: {arm.adapter!r}: adapters apply to chat models "
                                f"only, {arm.model!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} model")
            elif arm.adapter is not None and arm.model in adapters and arm.adapter not in adapters[arm.model]:
                have = ", ".join(sorted(adapters[arm.model])) or "none"
                problems.append(f"splits.{name}.{where}.adapter: {arm.adapter!r} is not an adapter of "
                                f"{arm.model!r} (its adapters: {have})")
        if len(seen) > 1:
            problems.append(f"splits.{name}: every arm must be the same kind of model, got {', '.join(sorted(seen))}")
    return problems
