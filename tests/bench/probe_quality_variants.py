"""Probe (not a test, not in any run): docs/quality.md's table, every column in one run.

Builds examples/rag.yaml as shipped and three variants with one field changed each, serves each on a real Triton
(cpu target, SmolLM2-135M-Instruct from PyPI) and runs `tritonforge quality`'s evaluation (48 questions, greedy,
48 tokens per answer) against it:

- default: as shipped (MiniLM retrieval, no reranking, the default prompt as plain text (answer.chat_template
  false), answer.top_n 1: the best passage only)
- chat_template: answer.chat_template = true (the prompt as one user turn of the checkpoint's chat template)
- three_passages: answer.top_n = 3 (the retriever's default_top_n, what the rag gave before it had top_n)
- terser: answer.prompt_template = TERSER below

    python tests/bench/probe_quality_variants.py    # ~10 min; docs/bench/quality_variants.json and, for the
                                                    # default, every answer in docs/bench/quality_default.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OUT = ROOT / "docs" / "bench"

TERSER = (
    "Answer in one short sentence, using only the passages below. Cite the passage you use as [id].\n"
    "{% if passages %}{% for p in passages %}[{{ p.id }}] {{ p.text }}\n{% endfor %}"
    "{% else %}(No passage was found for this question: say that you do not know.)\n{% endif %}"
    "\nQuestion: {{ query }}\nAnswer:"
)
VARIANTS: dict[str, tuple[str, str, Any]] = {  # name -> (model key, field, value); default: unchanged
    "default": ("", "", None),
    "chat_template": ("answer", "chat_template", True),
    "three_passages": ("answer", "top_n", 3),
    "terser": ("answer", "prompt_template", TERSER),
}


def _spec(model: str, field: str, value: Any) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load((EXAMPLES / "rag.yaml").read_text())
    if model:
        data["models"][model][field] = value
    return data


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from probe_call_plan import _targets_bench

    from tritonforge.build import build
    from tritonforge.quality import evaluate, load_questions
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    questions = load_questions(EXAMPLES / "data" / "questions.jsonl")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, field, value) in VARIANTS.items():
            began = time.monotonic()
            repo = Path(tmp) / name
            build(parse_spec(_spec(model, field, value), source_dir=EXAMPLES), repo, target="cpu")
            with TritonServer(repo, startup_timeout=600) as server:
                report = evaluate(server.endpoints.grpc, questions)
            results[name] = report.as_dict()
            sources = [len(a["sources"]) for a in report.answers]
            print(f"{name}: key fact {report.as_dict()['key_fact']:.3f}, cites {report.as_dict()['cites_passage']:.3f}, "
                  f"passage given {report.as_dict()['passage_given']:.3f}, sources per answer "
                  f"{min(sources)}-{max(sources)} ({time.monotonic() - began:.0f} s)", flush=True)
    summary = {
        "machine": _targets_bench().machine(),  # the CPU record every #17 benchmark writes
        "changed": {name: {"model": m, "field": f, "value": v} for name, (m, f, v) in VARIANTS.items() if m},
        "variants": {
            name: {k: v for k, v in r.items() if k != "answers"}
            | {"sources_per_answer": sorted({len(a["sources"]) for a in r["answers"]})}
            for name, r in results.items()
        },
    }
    (OUT / "quality_variants.json").write_text(json.dumps(summary, indent=2) + "\n")
    (OUT / "quality_default.json").write_text(json.dumps(results["default"], indent=2) + "\n")
    print(json.dumps(summary["variants"], indent=2))


if __name__ == "__main__":
    main()
