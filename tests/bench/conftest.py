"""The benchmark suite's one results table: after `pytest tests/bench -s`, every recorded figure against its target.

Each benchmark writes its own JSON (and PNG) under docs/bench/; at the end of the session this reads whichever of
them exist and writes docs/bench/RESULTS.md (and prints it), so one command gives one table. A benchmark that did
not run in this session keeps its last recorded JSON, and the table says which figures this run wrote.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

OUT = Path(__file__).resolve().parents[2] / "docs" / "bench"

Row = tuple[str, str, str, str]  # measure, figure, target, met


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def _ratio(value: Any) -> str:
    return "not measured" if value is None else f"{value:.2f}×"


def _embed_rows(d: dict[str, Any]) -> list[Row]:
    r, met = d["ratios"], d.get("met", {})
    hop = d.get("per_hop_overhead_traced")
    hop_how = "Triton traces, p50 per request" if hop else "client-side p50 difference (older method)"
    rows: list[Row] = [
        (
            "embed ensemble vs in-process ONNX Runtime",
            _ratio(r["embed_vs_in_process_onnxruntime"]),
            "≥ 0.9×",
            _met(met.get("embed_vs_in_process_onnxruntime")),
        ),
        (
            f"ensemble per-hop overhead ({hop_how})",
            f"{d['per_hop_overhead_p50_ms']:.3f} ms",
            "≤ 1 ms",
            _met(met.get("per_hop_overhead_p50_ms")),
        ),
        (
            "dynamic batching on vs off, c=16",
            _ratio(r["dynamic_batching_on_vs_off"]),
            "≥ 3×",
            _met(met.get("dynamic_batching_on_vs_off")),
        ),
        (
            "dynamic batching on vs off, c=16, 1 sentence/request",
            _ratio(r.get("dynamic_batching_on_vs_off_one_sentence_per_request")),
            "(recorded beside the 4-sentence load)",
            "—",
        ),
        ("2 vs 1 encoder instances, c=16", _ratio(r["two_vs_one_instance"]), "—", "—"),
        ("embed vs sentence-transformers (in-process)", _ratio(r["embed_vs_sentence_transformers"]), "—", "—"),
    ]
    for key, label in (("embed_vs_infinity_fp32", "in-process engine"), ("embed_vs_infinity_http_fp32", "HTTP server")):
        if key in r:
            value = r[key]
            rows.append(
                (
                    f"embed fp32 vs infinity-emb fp32 ({label})",
                    _ratio(value),
                    "≥ 1.3×",
                    _met(None if value is None else value >= 1.3),
                )
            )
    return rows


def _int8_rows(d: dict[str, Any]) -> list[Row]:
    r, met = d["ratios"], d.get("met", {})
    return [
        (
            "embed fp32 vs infinity-emb fp32 (HTTP server)",
            _ratio(r.get("embed_fp32_vs_infinity_http_fp32")),
            "≥ 1.3×",
            _met(met.get("embed_fp32_vs_infinity_http_fp32")),
        ),
        (
            "embed int8 vs infinity-emb fp32 (HTTP server)",
            _ratio(r.get("embed_int8_vs_infinity_http_fp32")),
            "≥ 2×",
            _met(met.get("embed_int8_vs_infinity_http_fp32")),
        ),
        ("embed int8 vs infinity-emb int8 (HTTP server)", _ratio(r.get("embed_int8_vs_infinity_http_int8")), "—", "—"),
        (
            "int8 encoder: min cosine to fp32 (builder's check)",
            f"{d['int8_build_min_cosine_to_fp32']:.3f}",
            "≥ 0.99",
            _met(d["int8_build_min_cosine_to_fp32"] >= 0.99),
        ),
    ]


def _llm_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, v in d.items():
        rows.append(
            (
                f"{name}: 8 concurrent vs sequential",
                f"{v['speedup']:.2f}×",
                f"≥ {v['target_speedup']:g}×",
                _met(v["speedup"] >= v["target_speedup"]),
            )
        )
        rows.append(
            (
                f"{name}: tokens/s c=1 / c=8 / generate() in-process",
                f"{v['tokens_per_s_concurrency_1']:.0f} / {v['tokens_per_s_concurrency_8']:.0f} / "
                f"{v['generate_in_process_tokens_per_s']:.0f}",
                "—",
                "—",
            )
        )
    return rows


def _rag_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for path, v in d["ratios_vs_ensemble"].items():
        res = d["results"][path]
        rows.append(
            (
                f"RAG via {path}: c=1 p50 / c=4 answers/s",
                f"{res['c1']['p50_ms']:.0f} ms / {res['c4']['answers_per_s']:.2f} "
                f"({v['c1_p50']:.2f}× / {v['c4_answers_per_s']:.2f}× the ensemble)",
                "—",
                "—",
            )
        )
    return rows


TARGET_LABELS = {  # issue #17's targets, as embed_targets.json records them
    "embed_grpc_vs_limit": "embed over gRPC vs the in-process limit as the issue defines it (tokenizer + ONNX Runtime, "
                           "one session, 2 threads, best batch)",
    "embed_grpc_vs_best_in_process": "embed over gRPC vs the best in-process configuration measured (any layout, "
                                     "any batch)",
    "gateway_vs_grpc": "gateway /v1/embeddings vs embed over gRPC",
    "gateway_base64_vs_grpc": "gateway /v1/embeddings with encoding_format base64 (the openai SDK's default) vs "
                              "embed over gRPC",
    "grpc_vs_infinity_torch": "embed over gRPC vs infinity-emb HTTP server (torch engine)",
    "gateway_vs_infinity_torch": "gateway /v1/embeddings vs infinity-emb HTTP server (torch engine)",
    "gateway_base64_vs_infinity_torch_base64": "the same, both with encoding_format base64",
    "int8_vs_fp32_grpc": "int8 vs fp32 embed over gRPC (int8 built without force)",
    "int8_mean_cosine": "int8 encoder: mean cosine to fp32 (builder's gate, evaluation corpus)",
    "int8_top10_overlap": "int8 encoder: top-10 search overlap with fp32 (builder's gate)",
    "batching_gain_vs_ceiling": "dynamic-batching gain vs its in-process ceiling (the served layout, best batch / "
                                "the request's 4 sentences)",
}


def _generation(m: dict[str, Any]) -> str:
    """" (family 23, model 49)": a bare "AMD EPYC" names no generation, and int8 kernels differ by generation."""
    return f" (family {m['cpu_family']}, model {m['cpu_model']})" if "cpu_family" in m and "cpu_model" in m else ""


def _targets_rows(d: dict[str, Any]) -> list[Row]:
    f, met, targets = d["figures"], d["met"], d["targets"]
    m = d.get("machine", {})
    rows: list[Row] = [
        ("machine", f"{m.get('cpu', '?')}{_generation(m)}, {m.get('cores', '?')} cores, "
                    f"SIMD {' '.join(m.get('simd_flags', []))}",
         "—", "—"),
    ]
    for key, label in TARGET_LABELS.items():
        if key not in targets:  # a target added after that run
            continue
        value = f.get(key)
        shown = "not measured" if value is None else (f"{value:.3f}" if key.startswith("int8_") and "vs" not in key
                                                      else f"{value:.2f}×")
        rows.append((label, shown, f"≥ {targets[key]}", _met(met.get(key))))
    optimum = _ratio(f.get("grpc_vs_infinity_optimum"))
    if f.get("gateway_vs_infinity_optimum") is not None:
        optimum += f" (gateway {_ratio(f['gateway_vs_infinity_optimum'])})"
    rows.append(("embed over gRPC vs infinity-emb HTTP server (optimum engine, ONNX Runtime)", optimum, "recorded",
                 "—"))
    rows.append(("dynamic-batching gain / in-process ceiling (its parts)",
                 f"{_ratio(f.get('batching_gain'))} / {_ratio(f.get('batching_ceiling_in_process'))}", "—", "—"))
    if f.get("batching_ceiling_from_batch_1") is not None:
        rows.append(("in-process ceiling from batch 1 (best batch / batch 1; requests carry 4 sentences, so "
                     "dynamic batching cannot reach it)", _ratio(f["batching_ceiling_from_batch_1"]), "—", "—"))
    return rows


def _aiperf_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for run in d["runs"]:
        rows.append((
            f"aiperf, gateway chat streaming, concurrency {run['concurrency']}: TTFT p50 / ITL p50 / output tokens/s",
            f"{run['ttft_ms']['p50']:.0f} ms / {run['itl_ms']['p50']:.1f} ms / "
            f"{run['output_tokens_per_s']['avg']:.1f}",
            "recorded", "—"))
    for run in (d.get("triton_generate_stream") or {}).get("runs", []):
        rows.append((
            f"aiperf, Triton HTTP generate_stream, concurrency {run['concurrency']}: TTFT p50 / ITL p50 / "
            "output tokens/s",
            f"{run['ttft_ms']['p50']:.0f} ms / {run['itl_ms']['p50']:.1f} ms / "
            f"{run['output_tokens_per_s']['avg']:.1f}",
            "recorded", "—"))
    ratios = d.get("gateway_vs_triton_generate_stream") or {}
    if ratios:
        rows.append(("aiperf output tokens/s, gateway chat vs Triton generate_stream, by concurrency",
                     " / ".join(f"c={c}: {r:.2f}×" for c, r in ratios.items()), "recorded", "—"))
    cost = d.get("gateway_cost")
    if cost:
        rows.append(("chat streaming through the gateway vs direct gRPC stream (tokens/s)",
                     _ratio(cost["gateway_vs_direct"]), "≥ 0.95", _met(cost["gateway_vs_direct"] >= 0.95)))
    return rows


SOURCES: dict[str, tuple[str, Callable[[dict[str, Any]], list[Row]]]] = {
    "embed_targets.json": ("tests/bench/test_embed_targets.py", _targets_rows),
    "aiperf_gateway.json": ("tests/bench/test_aiperf_gateway.py", _aiperf_rows),
    "embed_throughput.json": ("tests/bench/test_embed_throughput.py", _embed_rows),
    "embed_int8.json": ("tests/bench/test_embed_int8.py", _int8_rows),
    "llm_concurrency.json": ("tests/bench/test_llm_concurrency.py", _llm_rows),
    "rag_paths.json": ("tests/bench/test_rag_paths.py", _rag_rows),
}


def results_table(out: Path = OUT, since: float | None = None) -> str:
    """The table; ``since`` (a time.time()) marks files written after it as "this run", the rest as "earlier".

    File times are not kept by git, so no date is shown for figures this run did not write.
    """
    lines = [
        "# Benchmark results (written by `pytest tests/bench -s`; details in docs/performance.md)",
        "",
        "| benchmark | measure | figure | target | met |",
        "|---|---|---|---|---|",
    ]
    for file, (test, rows_of) in SOURCES.items():
        path = out / file
        if not path.exists():
            lines.append(f"| `{test}` | not run yet | | | |")
            continue
        written = "this run" if since is not None and path.stat().st_mtime >= since else "earlier run"
        try:
            rows = rows_of(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as err:  # an older file layout: say so rather than fail the run
            rows = [("unreadable", f"{type(err).__name__}: {err}", "", "")]
        for measure, figure, target, met in rows:
            lines.append(f"| `{file}` ({written}) | {measure} | {figure} | {target} | {met} |")
    return "\n".join(lines) + "\n"


_STARTED = time.time()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.option.collectonly or not any(item.get_closest_marker("bench") for item in session.items):
        return  # nothing was measured: leave the recorded table alone
    table = results_table(since=_STARTED)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "RESULTS.md").write_text(table)
    print("\n" + table, flush=True)
