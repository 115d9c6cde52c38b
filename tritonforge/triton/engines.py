"""Which model of a pipeline is its LLM engine: the one a stream's stop signal must reach.

Triton 2.51 does not pass an ensemble's cancellation on to its steps, so a client leaving a generation early sends
upstream's ``stop`` (same request id) to the engine itself. The engine is named ``tensorrt_llm`` by upstream, but
not in a repository of several LLMs (``model_names: prefixed``) or behind the rag ensemble: a stop sent to the
default name then reached nothing and the engine generated to ``max_tokens``. ``engine_model="auto"`` (the
clients' default) finds it from the configs the server holds: the first model, breadth first from the one called,
that declares upstream's ``stop`` input, following ensemble steps and the parameters by which tritonforge's python
steps name the model they call.

The search is a generator that asks for configs, so the sync and async connections drive the same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

from tritonforge.build_manifest import DEFAULT_ENGINE_MODEL

ENGINE_AUTO = "auto"  # engine_model's value asking for the engine to be found from the configs

# parameters by which tritonforge's python steps name the model they call: the rag answer step (the llm pipeline)
# and the llm BLS model (the engine)
CALLED_MODEL_PARAMETERS = ("llm_model", "tensorrt_llm_model_name")
MAX_MODELS_READ = 16  # a pipeline's models read at most (a rag ensemble and what it calls: ~8)

ConfigSearch = Generator[str, "Mapping[str, Any] | None", "str | None"]


def takes_stop(config: Mapping[str, Any]) -> bool:
    """Whether the model declares upstream's ``stop`` input (the engine path's and the LLM API model's alike)."""
    return any(isinstance(i, Mapping) and i.get("name") == "stop" for i in config.get("input") or ())


def called_models(config: Mapping[str, Any]) -> list[str]:
    """The models ``config``'s model calls: its ensemble steps, then the model its python step names."""
    steps = (config.get("ensemble_scheduling") or {}).get("step") or ()
    names = [str(step["model_name"]) for step in steps if isinstance(step, Mapping) and step.get("model_name")]
    parameters = config.get("parameters") or {}
    for key in CALLED_MODEL_PARAMETERS:
        value = (parameters.get(key) or {}).get("string_value") if isinstance(parameters, Mapping) else None
        if value:
            names.append(str(value))
    return names


def engine_search(model: str) -> ConfigSearch:
    """Yields the names of the models whose configs it needs (send each config back, None when it could not be
    read); returns the engine's name, or None when none of them takes a stop."""
    queue, seen, read = [model], {model}, 0
    while queue and read < MAX_MODELS_READ:
        name, read = queue.pop(0), read + 1
        config = yield name
        if config is None:
            continue
        if takes_stop(config):
            return name
        for called in called_models(config):
            if called not in seen:
                seen.add(called)
                queue.append(called)
    return None


def find_engine(model: str, config_of: Callable[[str], Mapping[str, Any] | None]) -> str | None:
    """:func:`engine_search` driven by a synchronous ``config_of``."""
    search = engine_search(model)
    try:
        name = next(search)
        while True:
            name = search.send(config_of(name))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def settled(engine: str | None, complete: bool) -> tuple[str | None, bool]:
    """(the engine a stop goes to, whether to keep that answer for the connection's lifetime). A found engine is
    kept; none found after every config was read: none (kept); none found while some config could not be read (a
    transient failure, a model still loading): upstream's name, as before "auto", and asked again next time (a
    hiccup kept for good would send no stop ever after)."""
    if engine is not None:
        return engine, True
    return (None, True) if complete else (DEFAULT_ENGINE_MODEL, False)


class Deadline:
    """One deadline over the search's reads (each got the whole timeout before), then what is left for the stream."""

    def __init__(self, timeout: float | None) -> None:
        self.end = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        return None if self.end is None else max(0.001, self.end - time.monotonic())

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end
