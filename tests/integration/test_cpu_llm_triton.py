"""The `cpu` LLM pipeline in a real tritonserver: preprocessing -> tensorrt_llm (cpu engine) -> postprocessing.

The repository is written by hand here (config.pbtxt text with upstream TensorRT-LLM's tensor names, an ensemble
`llm` wired like upstream's `ensemble`); the builder's output will replace it. Requests go over gRPC streaming.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonforge import python_backends

pytestmark = pytest.mark.integration

MAX_BATCH = 8
TIMEOUT = 120.0

# ------------------------------------------------------------------------------------------ the repository

# (name, data_type, dims, reshape to scalar, optional, allow_ragged_batch): upstream's tensorrt_llm template
ENGINE_INPUTS = [
    ("input_ids", "TYPE_INT32", [-1], False, True, True),
    ("encoder_input_features", "TYPE_FP16", [-1, -1], False, True, True),
    ("encoder_output_lengths", "TYPE_INT32", [1], True, True, False),
    ("input_lengths", "TYPE_INT32", [1], True, False, False),
    ("request_output_len", "TYPE_INT32", [1], True, False, False),
    ("num_return_sequences", "TYPE_INT32", [1], True, True, False),
    ("draft_input_ids", "TYPE_INT32", [-1], False, True, True),
    ("decoder_input_ids", "TYPE_INT32", [-1], False, True, True),
    ("decoder_input_lengths", "TYPE_INT32", [1], True, True, False),
    ("draft_logits", "TYPE_FP32", [-1, -1], False, True, True),
    ("draft_acceptance_threshold", "TYPE_FP32", [1], True, True, False),
    ("end_id", "TYPE_INT32", [1], True, True, False),
    ("pad_id", "TYPE_INT32", [1], True, True, False),
    ("stop_words_list", "TYPE_INT32", [2, -1], False, True, True),
    ("bad_words_list", "TYPE_INT32", [2, -1], False, True, True),
    ("embedding_bias", "TYPE_FP32", [-1], False, True, True),
    ("beam_width", "TYPE_INT32", [1], True, True, False),
    ("temperature", "TYPE_FP32", [1], True, True, False),
    ("runtime_top_k", "TYPE_INT32", [1], True, True, False),
    ("runtime_top_p", "TYPE_FP32", [1], True, True, False),
    ("runtime_top_p_min", "TYPE_FP32", [1], True, True, False),
    ("runtime_top_p_decay", "TYPE_FP32", [1], True, True, False),
    ("runtime_top_p_reset_ids", "TYPE_INT32", [1], True, True, False),
    ("len_penalty", "TYPE_FP32", [1], True, True, False),
    ("early_stopping", "TYPE_BOOL", [1], True, True, False),
    ("repetition_penalty", "TYPE_FP32", [1], True, True, False),
    ("min_tokens", "TYPE_INT32", [1], True, True, False),
    ("beam_search_diversity_rate", "TYPE_FP32", [1], True, True, False),
    ("presence_penalty", "TYPE_FP32", [1], True, True, False),
    ("frequency_penalty", "TYPE_FP32", [1], True, True, False),
    ("seed", "TYPE_UINT64", [1], True, True, False),
    ("return_log_probs", "TYPE_BOOL", [1], True, True, False),
    ("return_context_logits", "TYPE_BOOL", [1], True, True, False),
    ("return_generation_logits", "TYPE_BOOL", [1], True, True, False),
    ("return_perf_metrics", "TYPE_BOOL", [1], True, True, False),
    ("return_num_input_tokens", "TYPE_BOOL", [1], True, True, False),
    ("return_num_output_tokens", "TYPE_BOOL", [1], True, True, False),
    ("exclude_input_in_output", "TYPE_BOOL", [1], True, True, False),
    ("stop", "TYPE_BOOL", [1], True, True, False),
    ("streaming", "TYPE_BOOL", [1], True, True, False),
    ("prompt_embedding_table", "TYPE_FP16", [-1, -1], False, True, True),
    ("prompt_table_extra_ids", "TYPE_UINT64", [-1], False, True, True),
    ("prompt_vocab_size", "TYPE_INT32", [1], True, True, False),
    ("cross_attention_mask", "TYPE_BOOL", [-1, -1], False, True, True),
    ("mrope_rotary_cos_sin", "TYPE_FP32", [-1], False, True, False),
    ("mrope_position_deltas", "TYPE_INT64", [1], False, True, False),
    ("lora_task_id", "TYPE_UINT64", [1], True, True, False),
    ("lora_weights", "TYPE_FP16", [-1, -1], False, True, True),
    ("lora_config", "TYPE_INT32", [-1, 3], False, True, True),
    ("context_phase_params", "TYPE_UINT8", [-1], False, True, True),
    ("skip_cross_attn_blocks", "TYPE_BOOL", [1], False, True, True),
    ("retention_token_range_starts", "TYPE_INT32", [-1], False, True, True),
    ("retention_token_range_ends", "TYPE_INT32", [-1], False, True, True),
    ("retention_token_range_priorities", "TYPE_INT32", [-1], False, True, True),
    ("retention_token_range_durations_ms", "TYPE_INT32", [-1], False, True, True),
    ("retention_decode_priority", "TYPE_INT32", [1], False, True, True),
    ("retention_decode_duration_ms", "TYPE_INT32", [1], False, True, True),
    ("guided_decoding_guide_type", "TYPE_STRING", [1], False, True, True),
    ("guided_decoding_guide", "TYPE_STRING", [1], False, True, True),
    ("lookahead_window_size", "TYPE_INT32", [1], False, True, True),
    ("lookahead_ngram_size", "TYPE_INT32", [1], False, True, True),
    ("lookahead_verification_set_size", "TYPE_INT32", [1], False, True, True),
]
ENGINE_OUTPUTS = [
    ("output_ids", "TYPE_INT32", [-1, -1]), ("sequence_length", "TYPE_INT32", [-1]),
    ("cum_log_probs", "TYPE_FP32", [-1]), ("output_log_probs", "TYPE_FP32", [-1, -1]),
    ("context_logits", "TYPE_FP32", [-1, -1]), ("generation_logits", "TYPE_FP32", [-1, -1, -1]),
    ("batch_index", "TYPE_INT32", [1]), ("sequence_index", "TYPE_INT32", [1]),
    ("context_phase_params", "TYPE_UINT8", [-1]), ("kv_cache_alloc_new_blocks", "TYPE_INT32", [1]),
    ("kv_cache_reused_blocks", "TYPE_INT32", [1]), ("kv_cache_alloc_total_blocks", "TYPE_INT32", [1]),
    ("arrival_time_ns", "TYPE_INT64", [1]), ("first_scheduled_time_ns", "TYPE_INT64", [1]),
    ("first_token_time_ns", "TYPE_INT64", [1]), ("last_token_time_ns", "TYPE_INT64", [1]),
    ("acceptance_rate", "TYPE_FP32", [1]), ("total_accepted_draft_tokens", "TYPE_INT32", [1]),
    ("total_draft_tokens", "TYPE_INT32", [1]), ("num_input_tokens", "TYPE_INT32", [1]),
    ("num_output_tokens", "TYPE_INT32", [1]),
]
PRE_INPUTS = [
    ("QUERY", "TYPE_STRING", [1], False, False, False),
    ("DECODER_QUERY", "TYPE_STRING", [1], False, True, False),
    ("IMAGE_BYTES", "TYPE_UINT8", [-1, -1, -1, -1], False, True, False),
    ("IMAGE_URL", "TYPE_STRING", [1], False, True, False),
    ("IMAGES", "TYPE_STRING", [-1], False, True, False),
    ("VIDEO_BYTES", "TYPE_UINT8", [-1, -1, -1, -1], False, True, False),
    ("REQUEST_OUTPUT_LEN", "TYPE_INT32", [1], False, False, False),
    ("BAD_WORDS_DICT", "TYPE_STRING", [-1], False, True, False),
    ("STOP_WORDS_DICT", "TYPE_STRING", [-1], False, True, False),
    ("EMBEDDING_BIAS_WORDS", "TYPE_STRING", [-1], False, True, False),
    ("EMBEDDING_BIAS_WEIGHTS", "TYPE_FP32", [-1], False, True, False),
    ("END_ID", "TYPE_INT32", [1], False, True, False),
    ("PAD_ID", "TYPE_INT32", [1], False, True, False),
    ("PROMPT_TABLE_EXTRA_ID", "TYPE_UINT64", [1], False, True, False),
    ("apply_chat_template", "TYPE_BOOL", [1], False, True, False),  # tritonforge's addition
]
PRE_OUTPUTS = [
    ("INPUT_ID", "TYPE_INT32", [-1]), ("REQUEST_INPUT_LEN", "TYPE_INT32", [1]),
    ("DECODER_INPUT_ID", "TYPE_INT32", [-1]), ("REQUEST_DECODER_INPUT_LEN", "TYPE_INT32", [1]),
    ("BAD_WORDS_IDS", "TYPE_INT32", [2, -1]), ("STOP_WORDS_IDS", "TYPE_INT32", [2, -1]),
    ("EMBEDDING_BIAS", "TYPE_FP32", [-1]), ("REQUEST_OUTPUT_LEN", "TYPE_INT32", [-1]),
    ("OUT_END_ID", "TYPE_INT32", [1]), ("OUT_PAD_ID", "TYPE_INT32", [1]),
    ("OUT_PROMPT_TABLE_EXTRA_IDS", "TYPE_UINT64", [-1]),
]
# ensemble input -> preprocessing input, or -> tensorrt_llm input (upstream's wiring)
ENSEMBLE_TO_PRE = {
    "text_input": "QUERY", "decoder_text_input": "DECODER_QUERY", "max_tokens": "REQUEST_OUTPUT_LEN",
    "bad_words": "BAD_WORDS_DICT", "stop_words": "STOP_WORDS_DICT", "embedding_bias_words": "EMBEDDING_BIAS_WORDS",
    "embedding_bias_weights": "EMBEDDING_BIAS_WEIGHTS", "end_id": "END_ID", "pad_id": "PAD_ID",
    "prompt_table_extra_id": "PROMPT_TABLE_EXTRA_ID", "apply_chat_template": "apply_chat_template",
}
ENSEMBLE_TO_ENGINE = {
    "exclude_input_in_output": "exclude_input_in_output", "top_k": "runtime_top_k", "top_p": "runtime_top_p",
    "temperature": "temperature", "length_penalty": "len_penalty", "repetition_penalty": "repetition_penalty",
    "min_tokens": "min_tokens", "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
    "seed": "seed", "return_log_probs": "return_log_probs", "return_context_logits": "return_context_logits",
    "return_generation_logits": "return_generation_logits", "return_perf_metrics": "return_perf_metrics",
    "return_num_input_tokens": "return_num_input_tokens", "return_num_output_tokens": "return_num_output_tokens",
    "num_return_sequences": "num_return_sequences", "beam_width": "beam_width", "stream": "streaming",
    "prompt_embedding_table": "prompt_embedding_table", "prompt_vocab_size": "prompt_vocab_size",
    "lora_task_id": "lora_task_id", "lora_weights": "lora_weights", "lora_config": "lora_config",
    "guided_decoding_guide_type": "guided_decoding_guide_type", "guided_decoding_guide": "guided_decoding_guide",
}
PRE_TO_ENGINE = {  # preprocessing output -> tensorrt_llm input
    "INPUT_ID": "input_ids", "DECODER_INPUT_ID": "decoder_input_ids", "REQUEST_INPUT_LEN": "input_lengths",
    "REQUEST_DECODER_INPUT_LEN": "decoder_input_lengths", "REQUEST_OUTPUT_LEN": "request_output_len",
    "OUT_END_ID": "end_id", "OUT_PAD_ID": "pad_id", "EMBEDDING_BIAS": "embedding_bias",
    "STOP_WORDS_IDS": "stop_words_list", "BAD_WORDS_IDS": "bad_words_list",
    "OUT_PROMPT_TABLE_EXTRA_IDS": "prompt_table_extra_ids",
}


def _tensors(kind: str, specs: list[tuple]) -> str:
    items = []
    for name, dtype, dims, *flags in specs:
        scalar, optional, ragged = [*flags, False, False, False][:3]
        text = f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]'
        text += " reshape: { shape: [ ] }" if scalar else ""
        text += " optional: true" if optional else ""
        text += " allow_ragged_batch: true" if ragged else ""
        items.append(text + " }")
    return f"{kind} [\n" + ",\n".join(items) + "\n]\n"


def _parameters(**values: str) -> str:
    return "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in values.items())


def _maps(kind: str, mapping: dict[str, str]) -> str:
    return "".join(f'      {kind} {{ key: "{k}" value: "{v}" }}\n' for k, v in mapping.items())


def write_repository(repo: Path, checkpoint: Path) -> None:
    python_model = f'backend: "python"\nmax_batch_size: {MAX_BATCH}\n'
    cpu_group = "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    models = {
        "preprocessing": (
            python_model + "dynamic_batching { }\n" + _tensors("input", PRE_INPUTS)
            + _tensors("output", PRE_OUTPUTS) + cpu_group
            + _parameters(tokenizer_dir="tokenizer", add_special_tokens="true"),
            "llm_preprocessing",
        ),
        "tensorrt_llm": (
            python_model + "model_transaction_policy { decoupled: true }\n"
            + "dynamic_batching { max_queue_delay_microseconds: 100 }\n"
            + _tensors("input", ENGINE_INPUTS) + _tensors("output", ENGINE_OUTPUTS) + cpu_group
            + _parameters(checkpoint_dir="checkpoint", max_seq_len="512", max_input_len="256",
                          max_batch_size=str(MAX_BATCH), torch_threads="2", exclude_input_in_output="false"),
            "cpu_llm",
        ),
        "postprocessing": (
            python_model + "dynamic_batching { }\n"
            + _tensors("input", [("TOKENS_BATCH", "TYPE_INT32", [-1, -1]), ("SEQUENCE_LENGTH", "TYPE_INT32", [-1])])
            + _tensors("output", [("OUTPUT", "TYPE_STRING", [-1])]) + cpu_group
            + _parameters(tokenizer_dir="tokenizer", skip_special_tokens="true"),
            "llm_postprocessing",
        ),
    }
    for name, (config, source) in models.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\n' + config, encoding="utf-8")
        for file, data in python_backends.sources(source).items():  # model.py and the modules it loads
            (repo / name / "1" / file).write_bytes(data)
    shutil.copytree(checkpoint, repo / "tensorrt_llm" / "1" / "checkpoint")
    for name in ("preprocessing", "postprocessing"):
        (repo / name / "1" / "tokenizer").mkdir()
        for file in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(checkpoint / file, repo / name / "1" / "tokenizer" / file)

    pre_inputs = {p: e for e, p in ENSEMBLE_TO_PRE.items()}
    ensemble_inputs = [
        ("text_input", "TYPE_STRING", [1], False, False), ("decoder_text_input", "TYPE_STRING", [1], False, True),
        ("max_tokens", "TYPE_INT32", [1], False, False), ("num_return_sequences", "TYPE_INT32", [1], False, True),
        ("bad_words", "TYPE_STRING", [-1], False, True), ("stop_words", "TYPE_STRING", [-1], False, True),
        ("exclude_input_in_output", "TYPE_BOOL", [1], False, True), ("end_id", "TYPE_INT32", [1], False, True),
        ("pad_id", "TYPE_INT32", [1], False, True), ("top_k", "TYPE_INT32", [1], False, True),
        ("top_p", "TYPE_FP32", [1], False, True), ("temperature", "TYPE_FP32", [1], False, True),
        ("length_penalty", "TYPE_FP32", [1], False, True), ("repetition_penalty", "TYPE_FP32", [1], False, True),
        ("min_tokens", "TYPE_INT32", [1], False, True), ("presence_penalty", "TYPE_FP32", [1], False, True),
        ("frequency_penalty", "TYPE_FP32", [1], False, True), ("seed", "TYPE_UINT64", [1], False, True),
        *[(n, "TYPE_BOOL", [1], False, True) for n in ("return_log_probs", "return_context_logits",
                                                       "return_generation_logits", "return_perf_metrics",
                                                       "return_num_input_tokens", "return_num_output_tokens")],
        ("beam_width", "TYPE_INT32", [1], False, True), ("stream", "TYPE_BOOL", [1], False, True),
        ("prompt_embedding_table", "TYPE_FP16", [-1, -1], False, True),
        ("prompt_table_extra_id", "TYPE_UINT64", [1], False, True),
        ("prompt_vocab_size", "TYPE_INT32", [1], False, True),
        ("embedding_bias_words", "TYPE_STRING", [-1], False, True),
        ("embedding_bias_weights", "TYPE_FP32", [-1], False, True),
        ("lora_task_id", "TYPE_UINT64", [1], False, True),
        ("lora_weights", "TYPE_FP16", [-1, -1], False, True, True),
        ("lora_config", "TYPE_INT32", [-1, 3], False, True, True),
        ("guided_decoding_guide_type", "TYPE_STRING", [1], False, True, True),
        ("guided_decoding_guide", "TYPE_STRING", [1], False, True, True),
        ("apply_chat_template", "TYPE_BOOL", [1], False, True),
    ]
    passthrough = [o for o in ENGINE_OUTPUTS if o[0] not in ("output_ids", "sequence_length", "context_phase_params")]
    steps = (
        '    {\n      model_name: "preprocessing"\n      model_version: -1\n'
        + _maps("input_map", {p: pre_inputs[p] for p in pre_inputs})
        + _maps("output_map", {o[0]: f"_{o[0]}" for o in PRE_OUTPUTS})
        + '    },\n    {\n      model_name: "tensorrt_llm"\n      model_version: -1\n'
        + _maps("input_map", {e: f"_{p}" for p, e in PRE_TO_ENGINE.items()})
        + _maps("input_map", {e: c for c, e in ENSEMBLE_TO_ENGINE.items()})
        + _maps("output_map", {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH",
                               **{o[0]: o[0] for o in passthrough}})
        + '    },\n    {\n      model_name: "postprocessing"\n      model_version: -1\n'
        + _maps("input_map", {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"})
        + _maps("output_map", {"OUTPUT": "text_output"})
        + "    }\n"
    )
    ensemble = (
        f'name: "llm"\nplatform: "ensemble"\nmax_batch_size: {MAX_BATCH}\n'
        + _tensors("input", ensemble_inputs)
        + _tensors("output", [("text_output", "TYPE_STRING", [-1]), *passthrough])
        + "ensemble_scheduling {\n  step [\n" + steps + "  ]\n}\n"
    )
    (repo / "llm" / "1").mkdir(parents=True)
    (repo / "llm" / "config.pbtxt").write_text(ensemble, encoding="utf-8")


# -------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonforge.builders.tiny_models import make_tiny_decoder

    return make_tiny_decoder(tmp_path_factory.mktemp("decoder") / "decoder")


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Iterator[Any]:
    from tritonforge.server import TritonServer

    repo = tmp_path_factory.mktemp("llm") / "model_repository"
    repo.mkdir()
    write_repository(repo, checkpoint)
    server = TritonServer(repo, startup_timeout=240)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()

    def generate(prompt: str, n: int, chat: bool = False) -> str:
        if chat:
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          tokenize=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        else:
            ids = tok.encode(prompt)
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
        return tok.decode(out[0, len(ids):], skip_special_tokens=True)

    return generate


# ------------------------------------------------------------------------------------------------ the client


@dataclass
class Stream:
    """One request's responses on a gRPC stream."""

    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    first_at: float | None = None
    finished_at: float | None = None

    @property
    def text(self) -> str:
        assert not self.errors, self.errors
        return "".join(self.texts)


class LLMClient:
    """A gRPC stream to the server; each request has its own id and collects its responses until the final one."""

    def __init__(self, server: Any) -> None:
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        self.streams: dict[str, Stream] = {}
        self.orphans: queue.Queue[str] = queue.Queue()
        self.client.start_stream(callback=self._callback)

    def _callback(self, result: Any, error: Any) -> None:
        if error is not None:  # errors do not carry the request id: the caller checks the orphans
            self.orphans.put(str(error))
            return
        response = result.get_response()
        stream = self.streams[response.id]
        now = time.monotonic()
        if any(o.name == "text_output" for o in response.outputs):
            stream.texts.append(result.as_numpy("text_output").reshape(-1)[0].decode("utf-8"))
            stream.first_at = stream.first_at or now
        if response.parameters["triton_final_response"].bool_param:
            stream.finished_at = now
            stream.done.set()

    def send(self, prompt: str, max_tokens: int, stream: bool = False, model: str = "llm", **extra: Any) -> Stream:
        g = self.grpc
        values: dict[str, np.ndarray] = {
            "text_input": np.array([[prompt.encode("utf-8")]], dtype=object),
            "max_tokens": np.array([[max_tokens]], dtype=np.int32),
            "stream": np.array([[stream]], dtype=bool),
            "exclude_input_in_output": np.array([[True]], dtype=bool),
        }
        for name, value in extra.items():
            values[name] = value if isinstance(value, np.ndarray) else np.array([[value]])
        inputs = []
        for name, value in values.items():
            dtype = "BYTES" if value.dtype == object else g.np_to_triton_dtype(value.dtype)
            tensor = g.InferInput(name, list(value.shape), dtype)
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        request_id = uuid.uuid4().hex
        self.streams[request_id] = result = Stream()
        self.client.async_stream_infer(model, inputs, request_id=request_id, enable_empty_final_response=True)
        return result

    def wait(self, *streams: Stream, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for s in streams:
            if not s.done.wait(max(0.0, deadline - time.monotonic())):
                orphans = []
                while not self.orphans.empty():
                    orphans.append(self.orphans.get())
                raise AssertionError(f"no final response within {timeout}s (errors on the stream: {orphans})")

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.fixture()
def llm(llm_server: Any) -> Iterator[LLMClient]:
    client = LLMClient(llm_server)
    yield client
    client.close()


PROMPTS = [
    "Hello world",
    "The quick brown fox",
    "Tokenizers split words into smaller pieces",
    "A",
    "Triton serves many models at once",
    "Cats and dogs are common pets",
    "The weather today is sunny",
    "Machine learning models are trained on data",
]


# ---------------------------------------------------------------------------------------------------- tests


def test_greedy_text_equals_transformers_generate(llm: LLMClient, reference: Any) -> None:
    streams = [llm.send(p, 24) for p in PROMPTS[:4]]
    llm.wait(*streams)
    for prompt, stream in zip(PROMPTS[:4], streams, strict=True):
        assert len(stream.texts) == 1  # not streamed: one response carrying the whole text
        assert stream.text == reference(prompt, 24)


def test_chat_template_request(llm: LLMClient, reference: Any) -> None:
    stream = llm.send("What is Triton?", 16, apply_chat_template=True)
    llm.wait(stream)
    assert stream.text == reference("What is Triton?", 16, chat=True)


def test_streaming_yields_partial_responses(llm: LLMClient, reference: Any) -> None:
    prompt = "Sentence embeddings map text"
    streamed, whole = llm.send(prompt, 32, stream=True), llm.send(prompt, 32)
    llm.wait(streamed, whole)
    assert len([t for t in streamed.texts if t]) >= 5, streamed.texts  # several pieces before the final response
    assert streamed.text == whole.text == reference(prompt, 32)


def test_bad_request_gets_an_error_and_the_server_stays_healthy(llm: LLMClient, llm_server: Any,
                                                                reference: Any) -> None:
    bad = llm.send("Hello world", 0)
    with pytest.raises(AssertionError, match="request_output_len=0 must be > 0"):
        llm.wait(bad, timeout=20)
    good = llm.send("Hello world", 8)
    llm.wait(good)
    assert good.text == reference("Hello world", 8)


def test_cancelled_stream_stops_generation(llm_server: Any, reference: Any, checkpoint: Path) -> None:
    """Cancel a streamed request to the engine: it stops at the next iteration and the model keeps serving."""
    import tritonclient.grpc as grpcclient
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(checkpoint).encode("The quick brown fox")
    received: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(llm_server.endpoints.grpc)
    client.start_stream(callback=lambda result, error: received.put(error or result))
    values = {"input_ids": np.array([ids], np.int32), "input_lengths": np.array([[len(ids)]], np.int32),
              "request_output_len": np.array([[400]], np.int32), "streaming": np.array([[True]])}
    inputs = []
    for name, value in values.items():
        tensor = grpcclient.InferInput(name, list(value.shape), grpcclient.np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    client.async_stream_infer("tensorrt_llm", inputs, request_id="to-cancel")
    for _ in range(3):
        received.get(timeout=TIMEOUT)
    client.stop_stream(cancel_requests=True)
    client.close()
    deadline = time.monotonic() + 30
    while "'to-cancel' was cancelled" not in llm_server.log_text():
        assert time.monotonic() < deadline, "the engine did not notice the cancellation"
        time.sleep(0.2)
    generated = int(llm_server.log_text().split("'to-cancel' was cancelled after ")[1].split()[0])
    assert generated < 400
    after = LLMClient(llm_server)
    try:
        stream = after.send("Hello world", 8)
        after.wait(stream)
        assert stream.text == reference("Hello world", 8)
    finally:
        after.close()


def test_eight_concurrent_requests(llm: LLMClient, reference: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """8 requests at once share the engine's forward passes; timings are printed, not asserted."""
    n = 48
    llm.wait(llm.send("warm up", 4))

    def timed(run: Any) -> tuple[float, list[Stream]]:
        started = time.monotonic()
        streams = run()
        return time.monotonic() - started, streams

    def one_by_one() -> list[Stream]:
        streams = []
        for prompt in PROMPTS:
            streams.append(llm.send(prompt, n))
            llm.wait(streams[-1])
        return streams

    def all_at_once(stream: bool) -> list[Stream]:
        streams = [llm.send(p, n, stream=stream) for p in PROMPTS]
        llm.wait(*streams)
        return streams

    sequential_s, sequential = timed(one_by_one)
    concurrent_s, concurrent = timed(lambda: all_at_once(False))
    streamed_s, streamed = timed(lambda: all_at_once(True))
    for prompt, a, b, c in zip(PROMPTS, sequential, concurrent, streamed, strict=True):
        assert a.text == b.text == c.text == reference(prompt, n)
        assert len(c.texts) > 1
    with capsys.disabled():
        print(f"\n[cpu_llm] 8 requests x {n} tokens: sequential {sequential_s:.2f}s, concurrent {concurrent_s:.2f}s, "
              f"concurrent streamed {streamed_s:.2f}s")


def test_one_requests_extreme_sampling_settings_fail_only_that_request(llm: LLMClient, reference: Any) -> None:
    """A penalty of -3e38 (finite, so accepted) makes one request's logits infinite: its sampling failed, and the
    engine loop's handler failed every request generating with it. A temperature of 1e-40 overflowed the same way;
    it decodes greedily now (vLLM's rule below 1e-5)."""
    prompt = "Tokenizers split words into smaller pieces"
    good = llm.send(prompt, 48, stream=True)
    while not good.texts:  # generating when the bad one arrives
        time.sleep(0.01)
    f32 = np.float32
    bad = llm.send("Hello world", 8, temperature=np.array([[0.5]], f32), top_k=np.array([[5]], np.int32),
                   frequency_penalty=np.array([[-3e38]], f32))
    tiny = llm.send("Hello world", 8, temperature=np.array([[1e-40]], f32), top_k=np.array([[5]], np.int32))
    with pytest.raises(AssertionError, match="sampling failed for this request's settings: the logits after"):
        llm.wait(bad, timeout=10)  # (an error on a stream carries no request id: it ends as an orphan)
    llm.wait(good, tiny)
    assert good.text == reference(prompt, 48)
    assert tiny.text == reference("Hello world", 8)
    negative = llm.send("Hello world", 8, top_p=np.array([[-0.5]], f32))
    with pytest.raises(AssertionError, match=r"runtime_top_p=-0.5 must be in \(0, 1\] \(or 0: not set\)"):
        llm.wait(negative, timeout=10)
