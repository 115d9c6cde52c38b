"""The `cpu` generator (python_backends/cpu_llm/model.py) outside Triton: fake pb_utils, the real scheduler thread.

The reference is transformers' own `generate()` on the same tiny random Llama checkpoint.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import fake_pb_utils as fpb
import numpy as np
import pytest

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "cpu_llm" / "model.py"
FINAL = 1
WAIT = 60.0
PROMPTS = (
    "Hello world",
    "A",
    "The quick brown fox jumps over the lazy dog.",
    "Tokenizers split words into smaller pieces called tokens, and models read them",
    "Triton serves",
)


# ------------------------------------------------------------------------------------------------- the fakes


class Sender:
    """pb_utils.InferenceResponseSender: records responses and flags; nothing may follow FINAL."""

    def __init__(self) -> None:
        self.responses: list[Any] = []
        self.flags: list[int] = []
        self.final = threading.Event()
        self.errors: list[str] = []
        self.late_probes = 0  # is_cancelled() calls after FINAL

    def send(self, response: Any = None, flags: int = 0) -> None:
        if self.final.is_set():
            self.errors.append("send after FINAL")
        self.responses.append(response)
        self.flags.append(flags)
        if flags & FINAL:
            self.final.set()


class Request(fpb.Request):
    """A decoupled request: inputs, a response sender, a request id and a cancellation flag."""

    def __init__(self, request_id: str = "", **inputs: np.ndarray) -> None:
        super().__init__(**inputs)
        self._id = request_id
        self.sender = Sender()
        self.cancelled = False

    def get_response_sender(self) -> Sender:
        return self.sender

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int:
        return 0

    def is_cancelled(self) -> bool:
        if self.sender.final.is_set():  # real Triton has deleted the response factory: probing it can crash it
            self.sender.late_probes += 1
        return self.cancelled

    # ---- reading the outcome

    def wait(self, timeout: float = WAIT) -> list[Any]:
        assert self.sender.final.wait(timeout), f"no FINAL within {timeout}s"
        assert not self.sender.errors, self.sender.errors
        assert self.sender.flags[-1] & FINAL and all(not f & FINAL for f in self.sender.flags[:-1])
        return self.sender.responses

    def tokens(self) -> list[int]:
        """The generated tokens of a non-streamed request with one prompt."""
        (response,) = self.wait()
        assert not response.has_error(), response.error().message()
        return output(response, "output_ids")[0, 0].tolist()

    def error(self) -> str:
        responses = self.wait()
        assert len(responses) == 1 and responses[0].has_error(), "expected exactly one error response"
        return responses[0].error().message()


def output(response: Any, name: str) -> np.ndarray:
    tensor = fpb.get_output_tensor_by_name(response, name)
    assert tensor is not None, f"no output {name!r} in {[t.name() for t in response.output_tensors()]}"
    return tensor.as_numpy()


def load_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """model.py imported with fake pb_utils, completed with what decoupled models use."""
    module = fpb.make_module()
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, fpb.MODULE_NAME, module)
    # from the files a repository gets (model.py, its engine module and the shared cores.py)
    spec = importlib.util.spec_from_file_location("cpu_llm_model_under_test", fpb.shipped_folder(MODEL_PY) / "model.py")
    assert spec and spec.loader
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def config(decoupled: bool = True, **params: str) -> dict[str, Any]:
    return {
        "name": "tensorrt_llm",
        "backend": "python",
        "max_batch_size": 8,
        "model_transaction_policy": {"decoupled": decoupled},
        "parameters": {k: {"string_value": v} for k, v in params.items()},
        "output": [{"name": "context_logits", "data_type": "TYPE_FP32", "dims": [-1, -1]},
                   {"name": "generation_logits", "data_type": "TYPE_FP32", "dims": [-1, -1, -1]}],
    }


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder `tensorrt_llm/` whose version folder holds the tiny decoder as `checkpoint/`."""
    from tritonforge.builders.tiny_models import make_tiny_decoder

    model_dir = tmp_path_factory.mktemp("cpu_llm") / "tensorrt_llm"
    make_tiny_decoder(model_dir / "1" / "checkpoint")
    return model_dir


@pytest.fixture(scope="module")
def reference(repo: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo / "1" / "checkpoint")
    model = AutoModelForCausalLM.from_pretrained(repo / "1" / "checkpoint").eval()

    class Reference:
        tokenizer = tok
        hf = model

        @staticmethod
        def ids(text: str) -> list[int]:
            return tok.encode(text)

        @staticmethod
        def generate(ids: list[int], n: int, **kwargs: Any) -> list[int]:
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, **kwargs)
            new = out[0, len(ids):].tolist()
            eos = model.generation_config.eos_token_id
            return new[: new.index(eos)] if eos in new else new  # upstream leaves end_id out of the output

    return Reference


@pytest.fixture(scope="module")
def module(repo: Path) -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        yield load_module(mp)


@pytest.fixture(scope="module")
def model(module: ModuleType, repo: Path) -> Iterator[Any]:
    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args(config(max_seq_len="256", max_input_len="128"), repo))
    yield instance
    instance.finalize()
    assert not instance.engine.thread.is_alive()


@pytest.fixture()
def forward_shapes(model: Any) -> Iterator[list[tuple[int, ...]]]:
    """The input_ids shape of every forward pass the engine runs during the test."""
    shapes: list[tuple[int, ...]] = []
    engine = model.engine
    real = engine.model

    def spy(**kwargs: Any) -> Any:
        shapes.append(tuple(kwargs["input_ids"].shape))
        return real(**kwargs)

    engine.model = spy
    yield shapes
    engine.model = real


def request(ids: list[int], n: int, request_id: str = "", **extra: Any) -> Request:
    """A one-prompt request as the upstream ensemble sends it ([1, ...] tensors)."""
    tensors = {
        "input_ids": np.array([ids], dtype=np.int32),
        "input_lengths": np.array([[len(ids)]], dtype=np.int32),
        "request_output_len": np.array([[n]], dtype=np.int32),
    }
    dtypes = {"temperature": np.float32, "runtime_top_p": np.float32, "repetition_penalty": np.float32,
              "presence_penalty": np.float32, "frequency_penalty": np.float32, "len_penalty": np.float32,
              "seed": np.uint64, "random_seed": np.uint64, "lora_task_id": np.uint64}
    for name, value in extra.items():
        if isinstance(value, np.ndarray):
            tensors[name] = value
        elif isinstance(value, bool):
            tensors[name] = np.array([[value]], dtype=bool)
        else:
            tensors[name] = np.array([[value]], dtype=dtypes.get(name, np.int32))
    return Request(request_id, **tensors)


def word_list(words: list[list[int]]) -> np.ndarray:
    """Upstream's [1, 2, L] format: flattened ids, cumulative offsets padded with -1."""
    flat = [t for w in words for t in w]
    offsets = np.cumsum([len(w) for w in words]).tolist()
    width = max(len(flat), 1)
    out = np.zeros((1, 2, width), dtype=np.int32)
    out[0, 1, :] = -1
    out[0, 0, : len(flat)] = flat
    out[0, 1, : len(offsets)] = offsets
    return out


def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -------------------------------------------------------------------------------------------------- greedy


def test_greedy_batch_equals_generate(model: Any, reference: Any, forward_shapes: list[tuple[int, ...]]) -> None:
    prompts = [reference.ids(p) for p in PROMPTS]
    assert len({len(p) for p in prompts}) == len(prompts), "the prompts must differ in length"
    n = 24
    requests = [request(ids, n, exclude_input_in_output=True) for ids in prompts]
    assert model.execute(requests) is None  # decoupled: responses go through the senders
    got = [r.tokens() for r in requests]
    # ONE prefill for all prompts (left-padded to the longest), then [B, 1] decode steps
    assert forward_shapes[0] == (len(prompts), max(len(p) for p in prompts))
    assert forward_shapes[1] == (len(prompts), 1)
    for ids, tokens in zip(prompts, got, strict=True):
        assert tokens == reference.generate(ids, n)
        assert len(tokens) == n


def test_the_cache_goes_by_the_installed_transformers_name(module: ModuleType, model: Any, reference: Any) -> None:
    """transformers 5.25 renamed forward's ``past_key_values`` to ``cache`` (the old name warns, and goes in 5.40):
    the engine passes the cache under whichever name the model's forward takes, and reads it back either way."""
    import inspect

    engine = model.engine
    engine_module = module._engine  # model.py loads its sibling cpu_llm_engine.py under a private name
    real = engine.model
    expected = "cache" if "cache" in inspect.signature(real.forward).parameters else "past_key_values"
    passed: list[set[str]] = []

    def spy(**kwargs: Any) -> Any:
        passed.append(set(kwargs) & {"cache", "past_key_values"})
        return real(**kwargs)

    engine.model = spy
    try:
        ids = reference.ids(PROMPTS[0])
        r = request(ids, 4, exclude_input_in_output=True)
        model.execute([r])
        assert r.tokens() == reference.generate(ids, 4)
    finally:
        engine.model = real
    assert passed and all(names == {expected} for names in passed)

    class Old:
        def forward(self, input_ids: Any = None, past_key_values: Any = None, use_cache: bool = False) -> None: ...

    class New:
        def forward(self, input_ids: Any = None, cache: Any = None, use_cache: bool = False) -> None: ...

    assert engine_module._cache_keyword(Old()) == "past_key_values"
    assert engine_module._cache_keyword(New()) == "cache"

    class OldOut:
        past_key_values = "kv"

    class NewOut:
        cache = "kv"
        past_key_values = None  # a removed alias reads as nothing

    assert engine_module._output_cache(OldOut()) == engine_module._output_cache(NewOut()) == "kv"


def test_a_finished_request_is_never_probed_for_cancellation(model: Any, reference: Any) -> None:
    """Once FINAL is sent, Triton deletes the request's response factory, and probing `is_cancelled()` then can
    crash Triton 2.51 (SIGSEGV in TRITONBACKEND_ResponseFactoryIsCancelled, seen in CI through the BLS model's
    watcher). The engine probes every running request each iteration: a finished one must never be probed again."""
    first = request(reference.ids(PROMPTS[0]), 2)
    long = request(reference.ids(PROMPTS[1]), 12)
    model.execute([first, long])  # `first` finishes while `long` keeps the engine iterating
    first.wait()
    long.wait()
    assert first.sender.late_probes == 0 and long.sender.late_probes == 0


def test_output_includes_the_prompt_unless_excluded(model: Any, reference: Any) -> None:
    ids = reference.ids("Hello world")
    full, only_new = request(ids, 8), request(ids, 8, exclude_input_in_output=True)
    model.execute([full, only_new])
    (response,) = full.wait()
    assert output(response, "output_ids")[0, 0].tolist() == ids + only_new.tokens()
    assert output(response, "output_ids").shape == (1, 1, len(ids) + 8)
    assert output(response, "sequence_length").tolist() == [[len(ids) + 8]]


def test_requests_join_the_running_batch(model: Any, reference: Any, forward_shapes: list[tuple[int, ...]]) -> None:
    long_ids, late_ids = reference.ids("The quick brown fox"), reference.ids("Hello world, how are you")
    first = request(long_ids, 80, streaming=True)
    model.execute([first])
    wait_for(lambda: len(first.sender.responses) >= 5)
    late = request(late_ids, 12, exclude_input_in_output=True)
    model.execute([late])
    assert late.tokens() == reference.generate(late_ids, 12)
    first.wait()
    streamed = [output(r, "output_ids")[0, 0, 0] for r in first.sender.responses[:-1]]
    assert streamed == reference.generate(long_ids, 80)
    # the late request was prefilled alone, then decoded together with the running one
    assert (1, len(late_ids)) in forward_shapes
    assert (2, 1) in forward_shapes


def test_a_request_with_two_prompts(model: Any, reference: Any) -> None:
    a, b = reference.ids("Hello world"), reference.ids("The quick brown fox jumps")
    ids = np.zeros((2, len(b)), dtype=np.int32)
    ids[0, : len(a)], ids[1] = a, b
    req = Request(
        input_ids=ids,
        input_lengths=np.array([[len(a)], [len(b)]], dtype=np.int32),
        request_output_len=np.array([[10], [10]], dtype=np.int32),
        exclude_input_in_output=np.array([[True], [True]]),
    )
    model.execute([req])
    responses = req.wait()
    assert len(responses) == 2
    by_index = {int(output(r, "batch_index")[0, 0]): output(r, "output_ids")[0, 0].tolist() for r in responses}
    assert by_index == {0: reference.generate(a, 10), 1: reference.generate(b, 10)}


# ----------------------------------------------------------------------------------------------- streaming


def test_streaming_sends_one_response_per_token_then_final(model: Any, reference: Any) -> None:
    ids = reference.ids("Sentence embeddings map text")
    n = 16
    streamed, whole = request(ids, n, streaming=True), request(ids, n, exclude_input_in_output=True)
    model.execute([streamed, whole])
    responses = streamed.wait()
    assert len(responses) == n + 1
    assert responses[-1] is None and streamed.sender.flags[-1] == FINAL  # an empty final response
    pieces = []
    for response in responses[:-1]:
        assert not response.has_error()
        assert output(response, "output_ids").shape == (1, 1, 1)  # only the new token (upstream streaming)
        assert output(response, "sequence_length").tolist() == [[1]]
        pieces.append(int(output(response, "output_ids")[0, 0, 0]))
    assert pieces == whole.tokens() == reference.generate(ids, n)


# ------------------------------------------------------------------------------------------------ sampling


def test_seeded_sampling_is_reproducible(model: Any, reference: Any) -> None:
    ids = reference.ids("Machine learning models")
    settings = {"temperature": 0.9, "runtime_top_k": 40, "runtime_top_p": 0.95}
    runs = [request(ids, 30, seed=1234, exclude_input_in_output=True, **settings) for _ in range(2)]
    model.execute(runs[:1])
    model.execute(runs[1:])
    other_seed = request(ids, 30, seed=99, exclude_input_in_output=True, **settings)
    # the same seed inside a batch with other (greedy) sequences: per-request generators, same draws
    in_batch = request(ids, 30, seed=1234, exclude_input_in_output=True, **settings)
    neighbours = [request(reference.ids(p), 30) for p in PROMPTS[:3]]
    model.execute([other_seed, *neighbours[:1], in_batch, *neighbours[1:]])
    first = runs[0].tokens()
    assert runs[1].tokens() == first
    assert in_batch.tokens() == first
    assert other_seed.tokens() != first
    assert first != reference.generate(ids, 30), "sampling should not be greedy here"
    for r in neighbours:
        r.wait()


def test_greedy_cases(model: Any, reference: Any) -> None:
    """temperature 0, top_k 1, and no top_k/top_p at all (TensorRT-LLM's default) are greedy."""
    ids = reference.ids("Cats and dogs")
    expected = reference.generate(ids, 12)
    cases = [
        request(ids, 12, exclude_input_in_output=True, temperature=0.0, runtime_top_k=50, runtime_top_p=0.9),
        request(ids, 12, exclude_input_in_output=True, runtime_top_k=1, temperature=1.5),
        request(ids, 12, exclude_input_in_output=True, temperature=0.7, seed=5),
        request(ids, 12, exclude_input_in_output=True, runtime_top_p=0.0),  # <= 0 means unset, as upstream
    ]
    model.execute(cases)
    for case in cases:
        assert case.tokens() == expected


@pytest.mark.parametrize(
    ("given", "greedy"),
    [
        ({}, True),
        ({"temperature": 0.8}, False),  # the engine contract decodes this one greedily (test_greedy_cases)
        ({"top_p": 0.9}, False),
        ({"top_k": 0}, False),  # 0: every token
        ({"top_k": 1, "temperature": 1.5}, True),
        ({"top_p": 0.0, "temperature": 0.8}, True),
        ({"temperature": 0.0, "top_p": 0.9}, True),
    ],
)
def test_the_llm_api_rule_for_greedy_decoding(module: ModuleType, given: dict[str, float], greedy: bool) -> None:
    """The LLM API tensors follow SamplingParams.params_imply_greedy_decoding (upstream commit cited in the module)."""
    args = {"temperature": None, "top_p": None, "top_k": None} | given
    assert module._llmapi.implies_greedy(**args) is greedy


def test_a_temperature_alone_samples_on_the_llm_api_tensors(module: ModuleType, repo: Path, reference: Any) -> None:
    """Served with the LLM API tensors (text_input), sampling_param_temperature alone samples, as the LLM API does;
    sampling_param_top_p 0 is greedy there. The same temperature on the engine's tensors stays greedy."""
    cfg = config(max_seq_len="256", max_input_len="128")
    cfg["input"] = [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}]
    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args(cfg, repo))
    prompt = "Machine learning models"

    def ask(**sampling: Any) -> str:
        tensors = {"text_input": np.array([[prompt.encode()]], dtype=object),
                   "sampling_param_max_tokens": np.array([[24]], dtype=np.int32)}
        types = {"sampling_param_seed": np.uint64, "sampling_param_top_k": np.int32}
        for name, value in sampling.items():
            tensors[f"sampling_param_{name}"] = np.array([[value]], dtype=types.get(f"sampling_param_{name}", np.float32))
        req = Request(**tensors)
        instance.execute([req])
        (response,) = req.wait()
        assert not response.has_error(), response.error().message()
        return output(response, "text_output").reshape(-1)[0].decode()

    try:
        greedy = reference.tokenizer.decode(reference.generate(reference.ids(prompt), 24), skip_special_tokens=True)
        assert ask() == greedy
        assert ask(top_p=0.0, temperature=0.8) == greedy
        sampled = {ask(temperature=1.5, seed=seed) for seed in (1, 2, 3)}
        assert sampled - {greedy}, "a temperature alone decoded greedily on the LLM API tensors"
        assert ask(temperature=1.5, seed=2) == ask(temperature=1.5, seed=2)
    finally:
        instance.finalize()


def test_repetition_penalty_matches_transformers(model: Any, reference: Any) -> None:
    ids = reference.ids("A")
    req = request(ids, 20, exclude_input_in_output=True, repetition_penalty=1.5)
    model.execute([req])
    expected = reference.generate(ids, 20, repetition_penalty=1.5)
    assert req.tokens() == expected
    assert expected != reference.generate(ids, 20)


def test_presence_and_frequency_penalties_change_the_output(model: Any, reference: Any) -> None:
    ids = reference.ids("A")  # greedy repeats a token here
    plain = reference.generate(ids, 20)
    assert len(set(plain)) < len(plain)
    reqs = [request(ids, 20, exclude_input_in_output=True, presence_penalty=5.0),
            request(ids, 20, exclude_input_in_output=True, frequency_penalty=5.0)]
    model.execute(reqs)
    for req in reqs:
        tokens = req.tokens()
        assert tokens != plain
        assert len(set(tokens)) > len(set(plain))


# ------------------------------------------------------------------------------------------------- stopping


def test_end_id_stops_and_is_left_out(model: Any, reference: Any) -> None:
    ids = reference.ids("The weather today")
    plain = reference.generate(ids, 20)
    end_id = plain[6]
    cut = plain.index(end_id)
    stopped, streamed = (request(ids, 20, end_id=end_id, exclude_input_in_output=True),
                         request(ids, 20, end_id=end_id, streaming=True))
    model.execute([stopped, streamed])
    assert stopped.tokens() == plain[:cut]
    assert [int(output(r, "output_ids")[0, 0, 0]) for r in streamed.wait()[:-1]] == plain[:cut]


def test_min_tokens_keeps_end_id_away(model: Any, reference: Any) -> None:
    """min_tokens defaults to 1, as in TensorRT-LLM: end_id cannot be the first token; 0 allows it."""
    ids = reference.ids("The weather today")
    plain = reference.generate(ids, 12)
    immediate = request(ids, 12, end_id=plain[0], min_tokens=0, exclude_input_in_output=True)
    default = request(ids, 12, end_id=plain[0], exclude_input_in_output=True)
    later = request(ids, 12, end_id=plain[0], min_tokens=3, exclude_input_in_output=True)
    model.execute([immediate, default, later])
    assert immediate.tokens() == []
    assert default.tokens()[0] != plain[0]
    tokens = later.tokens()
    assert len(tokens) >= 3 and plain[0] not in tokens[:3]


def test_stop_words_stop_and_stay_in_the_output(model: Any, reference: Any) -> None:
    ids = reference.ids("Please send the report")
    plain = reference.generate(ids, 30)
    word = plain[4:6]  # a two-token stop sequence
    first = next(i for i in range(len(plain)) if plain[i: i + 2] == word)
    absent = next(t for t in range(10, 400) if t not in plain)
    req = request(ids, 30, stop_words_list=word_list([[absent, absent], word]), exclude_input_in_output=True)
    streamed = request(ids, 30, stop_words_list=word_list([word]), streaming=True)
    model.execute([req, streamed])
    assert req.tokens() == plain[: first + 2]
    assert len(streamed.wait()) == first + 2 + 1


def test_empty_word_lists_are_no_words(model: Any, reference: Any) -> None:
    """The upstream preprocessing always sends [1, 2, 0] lists, an empty embedding_bias, end_id and pad_id."""
    ids = reference.ids("Hello world")
    req = request(ids, 10, exclude_input_in_output=True, stop_words_list=np.zeros((1, 2, 0), np.int32),
                  bad_words_list=np.zeros((1, 2, 0), np.int32), embedding_bias=np.zeros((1, 0), np.float32),
                  pad_id=2, decoder_input_ids=np.array([[2]], np.int32), decoder_input_lengths=1)
    model.execute([req])
    assert req.tokens() == reference.generate(ids, 10)


def test_bad_words_are_never_generated(model: Any, reference: Any) -> None:
    ids = reference.ids("Hello world")
    plain = reference.generate(ids, 16)
    single = request(ids, 16, bad_words_list=word_list([[plain[0]]]), exclude_input_in_output=True)
    pair = request(ids, 16, bad_words_list=word_list([plain[2:4]]), exclude_input_in_output=True)
    model.execute([single, pair])
    tokens = single.tokens()
    assert plain[0] not in tokens and tokens[0] != plain[0]
    tokens = pair.tokens()
    assert tokens[:3] == plain[:3] and tokens[3] != plain[3]


def test_embedding_bias_steers_the_output(model: Any, reference: Any) -> None:
    ids = reference.ids("Hello world")
    target = reference.ids(" cats")[-1]
    bias = np.zeros((1, 200), dtype=np.float32)  # shorter than the vocabulary: zero-padded
    bias[0, target] = 100.0
    req = request(ids, 5, embedding_bias=bias, exclude_input_in_output=True)
    model.execute([req])
    assert req.tokens() == [target] * 5


# ------------------------------------------------------------------------------------------- extra outputs


def test_log_probs_logits_and_counts(model: Any, reference: Any) -> None:
    import torch

    ids = reference.ids("Numbers like 1, 2, 3")
    n = 6
    req = request(ids, n, exclude_input_in_output=True, min_tokens=0, return_log_probs=True, return_context_logits=True,
                  return_generation_logits=True, return_num_input_tokens=True, return_num_output_tokens=True,
                  return_perf_metrics=True)
    model.execute([req])
    (response,) = req.wait()
    tokens = output(response, "output_ids")[0, 0].tolist()
    full = torch.tensor([ids + tokens])
    with torch.no_grad():
        logits = reference.hf(full).logits[0]
    steps = logits[len(ids) - 1: len(ids) - 1 + n]
    expected = torch.log_softmax(steps, -1)[torch.arange(n), torch.tensor(tokens)].numpy()
    np.testing.assert_allclose(output(response, "output_log_probs")[0, 0], expected, atol=1e-4)
    np.testing.assert_allclose(output(response, "cum_log_probs")[0, 0], expected.sum(), atol=1e-3)
    np.testing.assert_allclose(output(response, "context_logits")[0], logits[: len(ids)].numpy(), atol=1e-4)
    np.testing.assert_allclose(output(response, "generation_logits")[0, 0], steps.numpy(), atol=1e-4)
    assert output(response, "num_input_tokens").tolist() == [[len(ids)]]
    assert output(response, "num_output_tokens").tolist() == [[n]]
    times = [int(output(response, f"{k}_time_ns")[0, 0]) for k in ("arrival", "first_scheduled", "first_token",
                                                                     "last_token")]
    assert times == sorted(times) and times[0] > 0
    assert output(response, "kv_cache_reused_blocks").dtype == np.int32


# ----------------------------------------------------------------------------------------------- bad input


def test_bad_requests_get_an_error_and_the_rest_are_served(model: Any, reference: Any) -> None:
    ids = reference.ids("Hello world")
    good = request(ids, 6, exclude_input_in_output=True)
    bad = {
        "the prompt is empty": request(ids, 6, input_lengths=0),
        "more than max_input_len": request(list(range(10, 140)), 6),
        "request_output_len=0 must be > 0": request(ids, 0),
        "exceeds max_seq_len=256": request(list(range(10, 110)), 200),
        "outside the vocabulary": request([5, 100000], 6),
        "input 'lora_task_id' is not supported": request(ids, 6, lora_task_id=3),
        "input 'beam_width' is not supported": request(ids, 6, beam_width=2),
        "temperature=-1.0 must be a finite number >= 0": request(ids, 6, temperature=-1.0),
        "temperature=nan must be a finite number >= 0": request(ids, 6, temperature=float("nan")),
        "temperature=inf must be a finite number >= 0": request(ids, 6, temperature=float("inf")),
        "runtime_top_p=-0.5 must be in (0, 1] (or 0: not set)": request(ids, 6, runtime_top_p=-0.5),
        "presence_penalty=inf must be a finite number": request(ids, 6, presence_penalty=float("inf")),
        "stop_words_list: offsets must increase": request(
            ids, 6, stop_words_list=np.array([[[5, 6, 7], [2, 1, -1]]], dtype=np.int32)),
        "input 'request_output_len'": Request(input_ids=np.array([ids], np.int32),
                                              input_lengths=np.array([[len(ids)]], np.int32)),
    }
    model.execute([*list(bad.values())[:5], good, *list(bad.values())[5:]])
    for message, req in bad.items():
        assert message in req.error(), (message, req.error())
    assert good.tokens() == reference.generate(ids, 6)


def test_unsupported_inputs_at_their_defaults_are_accepted(model: Any, reference: Any) -> None:
    ids = reference.ids("Hello world")
    req = request(ids, 6, exclude_input_in_output=True, beam_width=1, num_return_sequences=1, len_penalty=1.0,
                  early_stopping=False, lora_weights=np.zeros((1, 0, 0), np.float16),
                  prompt_embedding_table=np.zeros((1, 0, 0), np.float16),
                  guided_decoding_guide=fpb.strings([[""]]))
    model.execute([req])
    assert req.tokens() == reference.generate(ids, 6)


# ------------------------------------------------------------------------------------------- cancellation


def test_cancellation_stops_generation(model: Any, reference: Any) -> None:
    ids = reference.ids("The quick brown fox")
    req = request(ids, 200, streaming=True)
    model.execute([req])
    wait_for(lambda: len(req.sender.responses) >= 3)
    req.cancelled = True
    responses = req.wait(10)
    assert responses[-1].has_error() and "cancelled" in responses[-1].error().message()
    assert len(responses) < 100
    wait_for(lambda: not model.engine.running)  # its sequence left the batch
    after = request(ids, 4, exclude_input_in_output=True)
    model.execute([after])
    assert after.tokens() == reference.generate(ids, 4)


def test_a_queued_cancelled_request_never_runs(model: Any, reference: Any) -> None:
    ids = reference.ids("Hello world")
    req = request(ids, 50)
    req.cancelled = True
    model.execute([req])
    assert "cancelled" in req.error()


def test_stop_input_ends_a_running_request(model: Any, reference: Any) -> None:
    ids = reference.ids("The quick brown fox")
    running = request(ids, 200, request_id="job-7", exclude_input_in_output=True, streaming=True)
    model.execute([running])
    wait_for(lambda: len(running.sender.responses) >= 3)
    stopper = request(ids, 1, request_id="job-7", stop=True)
    model.execute([stopper])
    assert stopper.wait() == [None]
    responses = running.wait(10)
    assert responses[-1] is None and len(responses) < 100  # ends normally (FINAL), with what it had


def test_a_stop_without_a_request_id_is_refused_and_stops_nothing(model: Any, reference: Any) -> None:
    """The stop matched the running requests by id before the empty id was refused: a stop without one ended
    every running request sent without an id (a plain infer call carries none)."""
    ids = reference.ids("The quick brown fox")
    running = request(ids, 40, exclude_input_in_output=True, streaming=True)  # no request id
    model.execute([running])
    wait_for(lambda: len(running.sender.responses) >= 3)
    stopper = request(ids, 1, stop=True)
    model.execute([stopper])
    assert "stop=true needs the request id" in stopper.error()
    responses = running.wait(10)
    assert responses[-1] is None and len(responses) - 1 == len(reference.generate(ids, 40))  # every token ran


# ------------------------------------------------------------------------------------------- not decoupled


def test_without_decoupled_execute_returns_the_responses(module: ModuleType, repo: Path, reference: Any) -> None:
    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args(config(decoupled=False), repo))
    try:
        ids = reference.ids("Hello world")
        good, streaming = request(ids, 5, exclude_input_in_output=True), request(ids, 5, streaming=True)
        responses = instance.execute([good, streaming])
        assert len(responses) == 2
        assert output(responses[0], "output_ids")[0, 0].tolist() == reference.generate(ids, 5)
        assert "decoupled" in responses[1].error().message()
    finally:
        instance.finalize()


def test_checkpoint_dir_parameter(module: ModuleType, repo: Path) -> None:
    instance = module.TritonPythonModel()
    with pytest.raises(RuntimeError, match="checkpoint_dir"):
        instance.initialize(fpb.initialize_args(config(checkpoint_dir="nowhere"), repo))
    absolute = module.TritonPythonModel()
    absolute.initialize(fpb.initialize_args(config(checkpoint_dir="$$TRITON_MODEL_DIRECTORY/1/checkpoint"), repo))
    absolute.finalize()


def test_a_model_without_batching_takes_tensors_without_the_batch_dimension(module: ModuleType, repo: Path,
                                                                            reference: Any) -> None:
    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args({**config(), "max_batch_size": 0}, repo))
    try:
        ids = reference.ids("Hello world")
        req = Request(input_ids=np.array(ids, np.int32), input_lengths=np.array([len(ids)], np.int32),
                      request_output_len=np.array([5], np.int32), exclude_input_in_output=np.array([True]))
        instance.execute([req])
        (response,) = req.wait()
        assert output(response, "output_ids").tolist() == [reference.generate(ids, 5)]  # [beam, tokens]
        assert output(response, "sequence_length").tolist() == [5]
    finally:
        instance.finalize()


def test_int8_weights_quantize_every_linear_layer_and_still_generate(module: ModuleType, repo: Path,
                                                                     reference: Any) -> None:
    import torch

    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args(config(decoupled=False, weights="int8"), repo))
    try:
        layers = [m for m in instance.model.modules() if isinstance(m, torch.nn.Linear)]
        quantized = [m for m in instance.model.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
        assert not layers and quantized  # torch's dynamic int8 Linear replaced every fp32 one
        ids = reference.ids("Hello world")
        (response,) = instance.execute([request(ids, 5, exclude_input_in_output=True)])
        assert output(response, "output_ids").shape == (1, 1, 5)
    finally:
        instance.finalize()


def test_int8_weights_are_refused_with_adapters_and_unknown_weights_too(module: ModuleType, repo: Path) -> None:
    with pytest.raises(RuntimeError, match="weights=int8 does not combine with LoRA adapters"):
        module.TritonPythonModel().initialize(
            fpb.initialize_args(config(weights="int8", adapters_table="adapters.json"), repo))
    with pytest.raises(RuntimeError, match="weights='int4' is not one of fp32, bf16, int8"):
        module.TritonPythonModel().initialize(fpb.initialize_args(config(weights="int4"), repo))


def test_int8_quantization_adds_no_deprecation_warning_of_its_own(module: ModuleType) -> None:
    """torch deprecates torch.ao.quantization (for torchao) and its quantized dtypes: _int8_linear_layers silences
    exactly those two for its call; any other deprecation on this path (a new torch) fails here, not in a log."""
    import warnings

    import torch

    layers = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("error", category)
        warnings.filterwarnings("error", r"torch\.quantize_per_tensor", UserWarning)
        quantized = module._int8_linear_layers(torch, layers)
    assert [type(m).__module__ for m in quantized if "Linear" in type(m).__name__] == [
        "torch.ao.nn.quantized.dynamic.modules.linear"] * 2
    assert quantized(torch.ones(1, 8)).shape == (1, 4)


def test_int8_weights_on_a_torch_without_dynamic_quantization_say_so(module: ModuleType,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    with pytest.raises(RuntimeError, match=r"weights=int8 needs torch\.ao\.quantization\.quantize_dynamic, which "
                                           r"torch .* does not have .*; serve with weights=fp32"):
        module._int8_linear_layers(torch, torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------------------------- bf16 weights


def test_bf16_weights_load_the_model_in_bfloat16_and_generate_as_transformers_does_in_bf16(
        module: ModuleType, repo: Path, reference: Any, model: Any) -> None:
    """weights=bf16: every parameter bfloat16; greedy output equals transformers' generate() on the checkpoint loaded
    in bfloat16, token for token. Against fp32 (this tiny random model's logits are nearly flat, top-2 gaps down to
    ~0.02, so bf16 rounding can flip a near-tie): the logits stay within 0.1 of fp32's (and are not fp32's), and at
    most one prompt in five may differ (none does here, over 8 tokens)."""
    import torch
    from transformers import AutoModelForCausalLM

    bf16_hf = AutoModelForCausalLM.from_pretrained(repo / "1" / "checkpoint", dtype=torch.bfloat16).eval()
    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args(config(decoupled=False, weights="bf16"), repo))
    try:
        assert {p.dtype for p in instance.model.parameters()} == {torch.bfloat16}
        equal_to_fp32 = 0
        for prompt in PROMPTS:
            ids = reference.ids(prompt)
            (response,) = instance.execute([request(ids, 8, exclude_input_in_output=True,
                                                    return_context_logits=True)])
            got = output(response, "output_ids")[0, 0].tolist()
            with torch.no_grad():
                want = bf16_hf.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
            assert got == want, prompt
            equal_to_fp32 += got == reference.generate(ids, 8)
            logits = output(response, "context_logits")[0]
            assert logits.dtype == np.float32
            with torch.no_grad():
                fp32_logits = reference.hf(input_ids=torch.tensor([ids])).logits[0].numpy()
            difference = float(np.abs(logits - fp32_logits).max())
            assert 0 < difference < 0.1, (prompt, difference)  # bf16, not fp32, and close to it
        assert equal_to_fp32 >= len(PROMPTS) - 1, equal_to_fp32
        # sampling math runs in float32: a seeded top-p sample is reproducible and the log probs are finite
        ids = reference.ids(PROMPTS[0])
        sampled = [instance.execute([request(ids, 6, temperature=0.8, runtime_top_p=0.9, seed=3,
                                             return_log_probs=True)])[0] for _ in range(2)]
        assert output(sampled[0], "output_ids").tolist() == output(sampled[1], "output_ids").tolist()
        assert np.isfinite(output(sampled[0], "output_log_probs")).all()
    finally:
        instance.finalize()


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_bf16_weights_serve_lora_adapters_as_peft_does_on_the_bf16_base(module: ModuleType, repo: Path,
                                                                       reference: Any, tmp_path: Path) -> None:
    """LoRA on a bf16 base: peft keeps the adapter weights in float32 (its autocast_adapter_dtype) and casts the
    layer input; an adapter's greedy output equals peft's generate() on the same bf16 base, the base rows the bf16
    base model's, also when both share one forward pass."""
    import json
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tritonforge.builders.tiny_models import make_tiny_lora

    model_dir = tmp_path / "tensorrt_llm"
    shutil.copytree(repo / "1" / "checkpoint", model_dir / "1" / "checkpoint")
    make_tiny_lora(model_dir / "1" / "checkpoint", model_dir / "1" / "adapters" / "alpha", 1)
    (model_dir / "1" / "adapters.json").write_text(
        json.dumps({"adapters": {"alpha": {"lora_task_id": 1, "path": "adapters/alpha"}}}), encoding="utf-8")
    base = AutoModelForCausalLM.from_pretrained(model_dir / "1" / "checkpoint", dtype=torch.bfloat16).eval()
    peft = PeftModel.from_pretrained(base, str(model_dir / "1" / "adapters" / "alpha")).eval()

    def greedy(hf: Any, ids: list[int], n: int) -> list[int]:
        with torch.no_grad():
            return hf.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids):].tolist()

    instance = module.TritonPythonModel()
    instance.initialize(fpb.initialize_args(config(weights="bf16", adapters_table="adapters.json"), model_dir))
    try:
        assert instance.adapter_names == {1: "alpha"}
        lora = {p.dtype for n, p in instance.peft.named_parameters() if "lora_" in n}
        rest = {p.dtype for n, p in instance.peft.named_parameters() if "lora_" not in n}
        assert lora == {torch.float32} and rest == {torch.bfloat16}
        ids = reference.ids(PROMPTS[0])
        with_adapter = greedy(peft, ids, 8)
        with peft.disable_adapter():
            without = greedy(peft, ids, 8)
        assert with_adapter != without  # the adapter changes the output
        requests = [request(ids, 8, exclude_input_in_output=True, lora_task_id=1),
                    request(ids, 8, exclude_input_in_output=True)]
        instance.execute(requests)  # together: one forward pass with an adapter row and a base row
        assert [r.tokens() for r in requests] == [with_adapter, without]
    finally:
        instance.finalize()


def test_a_send_that_never_returns_ends_the_stub_so_it_is_restarted(module: ModuleType, model: Any) -> None:
    """A BLS caller's stub killed mid-stream left the engine's one scheduler thread in a send that never returned:
    the engine answered nothing more while READY (robustness audit). A send blocked past its limit ends the stub
    (exit 70), which the watchdog restarts; sends that return, however many, do not."""
    engine_module = module._engine
    assert engine_module._SEND_WATCH is not None  # the engine made it, and every job's send goes through it
    exits: list[int] = []
    watch = engine_module._SendWatch(limit=0.3, exit_process=exits.append)
    for _ in range(50):
        with watch.send():
            pass
    time.sleep(0.6)
    assert exits == []
    stuck = threading.Event()

    def blocked_send() -> None:
        with watch.send():
            stuck.wait(10)

    thread = threading.Thread(target=blocked_send, daemon=True)
    thread.start()
    wait_for(lambda: exits == [70], timeout=5)
    stuck.set()
    thread.join(5)
    # the setting: seconds > 0 or inf (never); 0 ended the stub on any send, a negative value stopped the watch
    limit = engine_module._stall_limit
    assert (limit("5"), limit("inf")) == (5.0, float("inf"))
    assert limit("0") == limit("-1") == limit("soon") == limit("nan") == 30.0
