"""Rendering a report: rich tables, error lines, a latency/throughput plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tritonforge.atomic_file import write_atomic
from tritonforge.bench.results import BenchReport, Percentiles

# ------------------------------------------------------------------------------------------------- rendering


def _ms(p: Percentiles | None, attr: str) -> str:
    return "-" if p is None else f"{getattr(p, attr):.1f}"


def report_tables(report: BenchReport) -> list[Any]:
    """Rich tables: the client's view per level, then Triton's server-side split per level and model."""
    from rich.table import Table

    mode = "no level completed"  # an interrupted run: the mode is not known from its levels
    if report.levels:
        mode = "closed loop" if report.levels[0].mode == "concurrency" else "open loop, Poisson"
    title = (
        f"{report.model} over {report.protocol} at {report.url} ({mode}, batch {report.batch_size}"
        f"{', streaming' if report.streaming else ''})"
    )
    client = Table(title=title)
    for col in ("level", "requests", "errors", "req/s", "items/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms"):
        client.add_column(col, justify="left" if col == "level" else "right")
    if report.streaming:
        for col in ("TTFT p50 ms", "ITL p50 ms", "tokens/s"):
            client.add_column(col, justify="right")
    for lv in report.levels:
        row = [
            lv.label,
            str(lv.requests),
            str(lv.errors)
            + (f" ({lv.error_rate:.0%})" if lv.errors else "")
            + (f" (+{lv.dropped} dropped)" if lv.dropped else ""),
            f"{lv.throughput_rps:.1f}",
            f"{lv.throughput_items_s:.1f}",
            *(_ms(lv.latency_ms, a) for a in ("p50", "p90", "p95", "p99")),
        ]
        if report.streaming:
            s = lv.stream
            row += [
                _ms(s.ttft_ms if s is not None else None, "p50"),
                _ms(s.inter_token_ms if s is not None else None, "p50"),
                "-" if s is None else f"{s.tokens_per_s:.1f}",
            ]
        client.add_row(*row)
    if report.interrupted:
        cut = f" during {report.interrupted_during} (not reported)" if report.interrupted_during else ""
        client.caption = f"interrupted{cut}: only the levels completed before it are shown"

    server = Table(title="server-side split (Triton statistics, average µs per request)")
    for col in (
        "level",
        "model",
        "requests",
        "failures",
        "avg batch",
        "queue",
        "compute in",
        "compute infer",
        "compute out",
        "total",
    ):
        server.add_column(col, justify="left" if col in ("level", "model") else "right")
    for lv in report.levels:
        if not lv.server:
            server.add_row(lv.label, lv.server_note or "no statistics", *([""] * 8))
        for sp in lv.server:
            server.add_row(
                lv.label,
                ("  └ " if sp.composing else "") + sp.model,
                str(sp.requests),
                str(sp.failures),
                f"{sp.avg_batch:.1f}",
                f"{sp.queue_us:.0f}",
                f"{sp.compute_input_us:.0f}",
                f"{sp.compute_infer_us:.0f}",
                f"{sp.compute_output_us:.0f}",
                f"{sp.total_us:.0f}",
            )
        if lv.server_mismatch:  # a row of its own (the why is printed below the tables): not this run's alone
            note = f"! Triton counted {lv.server_requests}, this run {lv.requests}"
            server.add_row(lv.label, note, *([""] * 8))
    return [client, server]


def error_lines(report: BenchReport) -> list[str]:
    """``level: count x message`` for every failed request kind."""
    return [f"{lv.label}: {n} x {msg}" for lv in report.levels for msg, n in lv.error_messages.items()]


def mismatch_lines(report: BenchReport) -> list[str]:
    """``level: why`` for every level whose server-side split is not this benchmark's requests alone."""
    return [f"{lv.label}: {lv.server_mismatch}" for lv in report.levels if lv.server_mismatch]


def error_rate_problems(report: BenchReport, max_error_rate: float) -> list[str]:
    """``level: rate`` for every level with no successful request, or whose failed share is above the bound."""
    problems = []
    for lv in report.levels:
        if lv.requests == 0:  # measured nothing, whatever the bound
            problems.append(f"{lv.label}: no successful request ({lv.errors} failed)")
        elif lv.error_rate > max_error_rate:
            problems.append(
                f"{lv.label}: {lv.errors} of {lv.requests + lv.errors} requests failed ({lv.error_rate:.1%}, "
                f"above --max-error-rate {max_error_rate:g})"
            )
    return problems


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """A PNG: throughput and p50/p99 latency against the level, and the server-side split as stacked bars."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    levels = report.levels
    xs = [lv.x for lv in levels]
    closed = bool(levels) and levels[0].mode == "concurrency"
    xlabel = "concurrency (workers)" if closed else "offered rate (requests/s)"

    fig, (ax_tp, ax_lat, ax_split) = plt.subplots(1, 3, figsize=(17, 5))
    fig.suptitle(f"{report.model} over {report.protocol} ({report.url}), batch {report.batch_size}")

    ax_tp.plot(xs, [lv.throughput_rps for lv in levels], "o-", label="requests/s")
    if report.batch_size > 1:
        ax_tp.plot(xs, [lv.throughput_items_s for lv in levels], "s--", label="items/s")
    if report.streaming:
        ax_tp.plot(xs, [lv.stream.tokens_per_s if lv.stream else 0 for lv in levels], "^:", label="tokens/s")
    ax_tp.set(title="throughput", xlabel=xlabel, ylabel="per second")
    ax_tp.set_ylim(bottom=0)
    ax_tp.legend()

    for attr, style in (("p50", "o-"), ("p99", "s--")):
        ax_lat.plot(
            xs, [getattr(lv.latency_ms, attr) if lv.latency_ms else float("nan") for lv in levels], style, label=attr
        )
    ax_lat.set(title="latency", xlabel=xlabel, ylabel="ms")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend()
    for ax in (ax_tp, ax_lat):
        ax.grid(alpha=0.3)
        if closed and len(xs) > 1 and max(xs) / max(min(xs), 1) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])

    bars = [(lv, sp) for lv in levels for sp in lv.server]
    if bars:
        parts = [
            ("queue", "queue_us", "#c7c7c7"),
            ("compute input", "compute_input_us", "#9ecae1"),
            ("compute infer", "compute_infer_us", "#3182bd"),
            ("compute output", "compute_output_us", "#fd8d3c"),
        ]
        positions, pos, previous = [], 0.0, None
        for lv, _ in bars:
            if previous is not None and lv is not previous:
                pos += 0.6  # a gap between levels
            positions.append(pos)
            pos += 1.0
            previous = lv
        bottom = np.zeros(len(bars))
        # an ensemble's compute time spans its composing models: hatch its bars so they are not added up
        hatches = ["//" if report.composing_models and not sp.composing else "" for _, sp in bars]
        for label, attr, color in parts:
            values = np.array([getattr(sp, attr) / 1000.0 for _, sp in bars])
            ax_split.bar(
                positions,
                values,
                bottom=bottom,
                color=color,
                label=label,
                width=0.8,
                hatch=hatches,
                edgecolor="white",
                linewidth=0,
            )
            bottom += values
        ax_split.set_xticks(positions)
        ax_split.set_xticklabels([f"{lv.label}\n{sp.model}" for lv, sp in bars], rotation=45, ha="right", fontsize=8)
        title = "server-side split (avg per request)"
        if report.composing_models:
            title += f"\nhatched: the {report.model} ensemble (spans its composing models)"
        ax_split.set(title=title, ylabel="ms")
        ax_split.set_ylim(bottom=0)
        from matplotlib.patches import Patch

        ax_split.legend(handles=[Patch(color=c, label=lb) for lb, _, c in parts], fontsize=8)
    else:
        ax_split.text(0.5, 0.5, "no server statistics", ha="center", va="center", transform=ax_split.transAxes)
        ax_split.set_axis_off()
    fig.tight_layout()
    try:  # through a temporary file: a full disk left a truncated PNG behind
        return write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)
