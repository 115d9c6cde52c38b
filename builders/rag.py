"""A rag model's set: the `<key>_prompt` step (python) and the `rag` ensemble, wired through the models of the
retriever (with its embedder and reranker) and the LLM that the spec entry names.

The prompt step ships the LLM's tokenizer files (the ones its preprocessing ships) so it counts prompt tokens
exactly as the preprocessing will encode them, and gets the LLM's max_input_len / max_seq_len to trim passages.
"""

from __future__ import annotations

from dataclasses import replace

from tritonforge import python_backends
from tritonforge.builders.llm import llm_names
from tritonforge.builders.llm_gpu import TOKENIZER_FOLDER, ensemble_signature
from tritonforge.builders.model_configs import ModelSet, Signature, Target, TensorSpec, render_model
from tritonforge.ensembles.dag import ModelIO
from tritonforge.ensembles.rag import GENERATION_INPUTS, rag_ensemble
from tritonforge.naming import embedding_names, rag_names, reranker_names, retriever_names
from tritonforge.repository import FileContent
from tritonforge.spec import LLMModel, RagModel, RetrieverModel

PROMPT_INPUTS = (
    TensorSpec("QUERY", "TYPE_STRING", (1,)),
    TensorSpec("DOC_IDS", "TYPE_STRING", (-1,)),
    TensorSpec("DOCUMENTS", "TYPE_STRING", (-1,)),
    TensorSpec("SCORES", "TYPE_FP32", (-1,)),
    TensorSpec("max_tokens", "TYPE_INT32", (1,), optional=True),
    TensorSpec("MIN_SCORE", "TYPE_FP32", (1,), optional=True),
    TensorSpec("TOP_N", "TYPE_INT32", (1,), optional=True),
)
PROMPT_OUTPUTS = (
    TensorSpec("PROMPT", "TYPE_STRING", (1,)),
    TensorSpec("SOURCE_IDS", "TYPE_STRING", (-1,)),
    TensorSpec("SOURCE_SCORES", "TYPE_FP32", (-1,)),
    TensorSpec("PASSAGES_DROPPED", "TYPE_INT32", (1,)),
    TensorSpec("REQUEST_OUTPUT_LEN", "TYPE_INT32", (1,)),
)


def chat_template_overhead(tokenizer_files: dict[str, FileContent], trust_remote_code: bool = False) -> int:
    """Tokens the LLM's chat template adds around one user turn (0 without a template): the prompt step keeps room
    for them when it fits passages into max_input_len. ``trust_remote_code``: the llm model's (its tokenizer may be
    code)."""
    import tempfile
    from pathlib import Path

    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for rel, content in tokenizer_files.items():
            target = Path(tmp) / rel.split("/", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else Path(content).read_bytes())
        tok = AutoTokenizer.from_pretrained(tmp, trust_remote_code=trust_remote_code)
        if not getattr(tok, "chat_template", None):
            return 0
        marker = "x"
        rendered = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                           add_generation_prompt=True)
        # as the LLM API path tokenizes it (with the tokenizer's special tokens), minus the message itself
        return max(0, len(tok.encode(rendered)) - len(tok.encode(marker, add_special_tokens=False)))


def generation_controls(llm: LLMModel) -> tuple[TensorSpec, ...]:
    """The `llm` ensemble's generation controls a rag model forwards unchanged (optional, upstream names)."""
    llm_inputs = {
        t.name: t
        for t in ensemble_signature(
            logits_datatype=llm.tensorrt_llm.logits_datatype,
            prompt_embedding_table_data_type=llm.tensorrt_llm.prompt_embedding_table_data_type,
        ).inputs
    }
    return tuple(replace(llm_inputs[n], optional=True) for n in GENERATION_INPUTS if n in llm_inputs)


def rag_model_set(
    key: str,
    model: RagModel,
    target: Target,
    *,
    retriever: RetrieverModel,
    llm: LLMModel,
    sets: dict[str, ModelSet],
) -> ModelSet:
    """`sets` holds the already rendered sets of the spec's models, by key (embedder, reranker, retriever, llm)."""
    names = llm_names(model.llm, llm)
    rag = rag_names(key, ensemble=model.ensemble)
    llm_set = sets[model.llm]
    tokenizer_prefix = f"{names.preprocessing}/1/{TOKENIZER_FOLDER}/"
    tokenizer_files: dict[str, FileContent] = {
        f"{TOKENIZER_FOLDER}/{path[len(tokenizer_prefix) :]}": content
        for path, content in llm_set.files.items()
        if path.startswith(tokenizer_prefix)
    }
    overhead = chat_template_overhead(tokenizer_files, llm.remote_code_trusted) if model.chat_template else 0
    params = {
        "trust_remote_code": "true" if llm.remote_code_trusted else "false",
        "prompt_template": model.prompt_template,
        "tokenizer_dir": llm.preprocessing.tokenizer_dir or TOKENIZER_FOLDER,
        "add_special_tokens": "true" if llm.preprocessing.add_special_tokens else "false",
        # the chat template wraps the prompt in its own tokens: keep room for them when fitting passages
        "max_input_len": str(llm.max_input_len - overhead),
        "max_seq_len": str(llm.max_seq_len),
        "template_overhead": str(overhead),  # and beside max_tokens within max_seq_len
        "default_max_tokens": str(model.max_tokens),
        # a request without TOP_N keeps the rag's top_n (or the retriever's default_top_n) passages: after
        # reranking the select step has cut to default_top_n; without a reranker only this step can (it was given
        # all default_top_k candidates)
        "default_top_n": str(model.top_n or retriever.default_top_n),
    }
    if model.min_score is not None:
        params["min_score"] = repr(float(model.min_score))
    prompt_cfg, notes = render_model(
        rag.prompt,
        model.prompt,
        Signature(PROMPT_INPUTS, PROMPT_OUTPUTS),
        target=target,
        backend="python",
        parameters=params,
        cpu_only=True,
    )
    out = ModelSet(notes=notes)
    out.add(prompt_cfg, {**python_backends.sources("rag_prompt"), **tokenizer_files})  # model.py, control_tokens.py

    # the generate step: the sources in, every output out; the LLM's generation controls forwarded as they are
    accepted = {i.name for i in llm_set.configs[names.ensemble].input}  # the LLM runtime's ensemble takes these
    controls = tuple(c for c in generation_controls(llm) if c.name in accepted)
    sources = PROMPT_OUTPUTS  # the last, REQUEST_OUTPUT_LEN, is an input only
    generate_cfg, generate_notes = render_model(
        rag.generate,
        model.prompt,
        Signature(sources + controls, (TensorSpec("text_output", "TYPE_STRING", (-1,)), *sources[:4])),
        target=target,
        backend="python",
        parameters={"llm_model": names.ensemble, "apply_chat_template": "true" if model.chat_template else "false"},
        cpu_only=True,
        decoupled=True,
    )
    out.notes += generate_notes
    out.add(generate_cfg, python_backends.sources("rag_generate"))  # model.py, rag_answer.py

    embedder = sets[retriever.embedder]
    reranker = sets[str(retriever.reranker)] if model.rerank else None
    ret = sets[model.retriever]

    embedder_names = embedding_names(retriever.embedder)
    reranker_set_names = reranker_names(str(retriever.reranker))
    retriever_set_names = retriever_names(model.retriever, reranked=retriever.reranker is not None)

    def io(model_set: ModelSet, name: str) -> ModelIO:
        return ModelIO.from_config(model_set.configs[name])

    config = rag_ensemble(
        rag.ensemble,
        tokenizer=io(embedder, embedder_names.tokenizer),
        encoder=io(embedder, embedder_names.encoder),
        retriever=io(ret, retriever_set_names.retriever),
        pair_tokenizer=io(reranker, reranker_set_names.pair_tokenizer) if reranker else None,
        cross_encoder=io(reranker, reranker_set_names.cross_encoder) if reranker else None,
        select=io(ret, str(retriever_set_names.select)) if reranker else None,
        prompt=ModelIO.from_config(prompt_cfg),
        generate=ModelIO.from_config(generate_cfg),
    )
    out.add(config, {})
    return out
