"""Which model of a pipeline is its LLM engine: the one a stream's stop signal must reach.

Triton 2.51 does not pass an ensemble's cancellation on to its steps, so a client leaving a generation early sends
upstream's ``stop`` (same request id) to the engine itself. The engine is named ``tensorrt_llm`` by upstream, but
not in a repository of several LLMs (``model_names: prefixed``) or behind the rag ensemble: a stop sent to the
default name then reached nothing and the engine generated to ``max_tokens``. ``engine_model="auto"`` (the
clients' default) finds it from the configs the server holds: the first model, breadth first from the one called,
that declares upstream's ``stop`` input, following ensemble steps and the parameters by which tritonforge's python
steps name the model they call.

The search is a generator that asks for configs, driven by :class:`EngineLookup`, so the sync and async
connections share everything but the reads.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any

from tritonforge.build_manifest import DEFAULT_ENGINE_MODEL

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

ENGINE_AUTO = "auto"  # engine_model's value asking for the engine to be found from the configs
STOP_INPUT = "stop"  # upstream's input that ends a running generation: only an LLM engine declares it

# parameters by which tritonforge's python steps name the model they call: the rag answer step (the llm pipeline)
# and the llm BLS model (the engine)
CALLED_MODEL_PARAMETERS = ("llm_model", "tensorrt_llm_model_name")
MAX_MODELS_READ = 16  # a pipeline's models read at most (a rag ensemble and what it calls: ~8)

ConfigSearch = Generator[str, "Mapping[str, Any] | None", "str | None"]


def takes_stop(config: Mapping[str, Any] | ModelConfig) -> bool:
    """Whether the model declares upstream's ``stop`` input (the engine path's and the LLM API model's alike): what
    makes a model an LLM engine here and in deploy's autoscaling. ``config`` in Triton's JSON form (what a server
    answers) or as a ModelConfig message (what a repository holds)."""
    if isinstance(config, Mapping):
        names = [i.get("name") for i in config.get("input") or () if isinstance(i, Mapping)]
    else:
        names = [i.name for i in config.input]
    return STOP_INPUT in names


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


class EngineLookup:
    """One search for ``model``'s engine under one deadline, with the bookkeeping the sync and async connections
    share; they only read the configs it asks for::

        lookup = EngineLookup(model, timeout)
        while (name := lookup.pending()) is not None:
            lookup.answer(<name's config, or None when it could not be read>)   # read within lookup.deadline.left()
        engine, keep = lookup.outcome()
    """

    def __init__(self, model: str, timeout: float | None) -> None:
        self.deadline = Deadline(timeout)
        self._search = engine_search(model)
        self._next: str | None = next(self._search)  # the model itself is always read first
        self._found: str | None = None
        self._complete = True

    def pending(self) -> str | None:
        """The model whose config to read next; None once the search is over. Past the deadline nothing more is
        read: each config still asked for counts as unreadable."""
        while self._next is not None and self.deadline.passed():
            self.answer(None)
        return self._next

    def answer(self, config: Mapping[str, Any] | None) -> None:
        """The config of the model :meth:`pending` named (None: it could not be read)."""
        self._complete = self._complete and config is not None
        try:
            self._next = self._search.send(config)
        except StopIteration as done:
            self._next, self._found = None, done.value

    @property
    def found(self) -> str | None:
        """The search's own answer: the engine's name, or None (none found, or not over)."""
        return self._found

    def outcome(self) -> tuple[str | None, bool]:
        """(the engine a stop goes to, whether to keep that answer): see :func:`settled`."""
        return settled(self._found, self._complete)
