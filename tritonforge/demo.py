"""`tritonforge demo`: build the bundled example offline, serve it on a real Triton, query it, stop."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tritonforge.errors import BuildError

SENTENCES = [
    "Triton serves many models on one GPU.",
    "One inference server can host several models on a single accelerator.",
    "The recipe needs two eggs and a cup of flour.",
    "Bake the cake for forty minutes.",
]


def example_spec(name: str = "embed.yaml") -> Path:
    """The bundled example specs live in the source tree's examples/ folder."""
    candidates = [Path(__file__).resolve().parent.parent / "examples" / name, Path.cwd() / "examples" / name]
    for path in candidates:
        if path.is_file():
            return path
    raise BuildError(f"example spec '{name}' not found (looked in {', '.join(map(str, candidates))}); pass --spec")


def run_demo(console: Console, *, spec: Path | None = None, out: Path | None = None) -> None:
    import numpy as np

    from tritonforge.build import build
    from tritonforge.clients import Client
    from tritonforge.server import TritonServer

    spec = spec or example_spec()
    with tempfile.TemporaryDirectory(prefix="tritonforge-demo-") as tmp:
        repo = out or Path(tmp) / "model_repository"
        console.rule(f"1. build {spec.name} (offline checkpoint, cpu target)")
        with console.status("building…") as status:
            report = build(spec, repo, target="cpu", progress=lambda m: status.update(m))
        for a in report.artifacts:
            diff = f"{a.parity_max_abs_diff:.1e}" if a.parity_max_abs_diff is not None else "-"
            console.print(f"{a.model}: ONNX encoder {a.precision}, parity vs PyTorch max |Δ| = {diff}")
        console.print(f"repository {repo}: {', '.join(report.models)} (validated) in {report.seconds:.1f} s")

        console.rule("2. serve on the embedded tritonserver")
        t0 = time.perf_counter()
        with TritonServer(repo) as server:
            ep = server.endpoints
            console.print(
                f"ready in {time.perf_counter() - t0:.1f} s: gRPC {ep.grpc}, HTTP {ep.http}, metrics {ep.metrics}"
            )

            console.rule("3. embed over gRPC and HTTP")
            results = {}
            for protocol, url in (("grpc", ep.grpc), ("http", ep.http)):
                with Client(url, protocol=protocol) as client:
                    t0 = time.perf_counter()
                    results[protocol] = client.embed(SENTENCES)
                    console.print(
                        f"{protocol}: {results[protocol].shape[0]} × {results[protocol].shape[1]} "
                        f"in {1000 * (time.perf_counter() - t0):.1f} ms"
                    )
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
        console.rule("4. stopped")
