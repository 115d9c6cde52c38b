"""The command line: a thin map from arguments onto library calls (see tritonforge/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from tritonforge.errors import TritonForgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Build, validate, serve and call Triton model repositories.")
console = Console(stderr=True)
out = Console()


def _fail(err: TritonForgeError) -> None:
    problems = getattr(err, "problems", None)
    if problems:
        console.print(f"[bold red]{err.headline}[/] ({len(problems)} problem{'s' * (len(problems) != 1)})")
        for p in problems:
            # plain print: users grep these lines, and Rich must not wrap or re-style them
            print(str(p))
    else:
        console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(1)


@app.command()
def validate(
    repo: Annotated[Path, typer.Argument(help="model repository folder")],
    gpus: Annotated[int, typer.Option(help="GPUs on the target machine (ids 0..N-1) for KIND_GPU checks")] = 8,
) -> None:
    """Check a whole repository against Triton's load-time rules. Exit 0 if valid, 1 with 'path: message' lines."""
    from tritonforge.validator import validate as validate_repo

    try:
        validate_repo(repo, gpus=gpus)
    except TritonForgeError as err:
        _fail(err)
    out.print(f"[green]valid[/]: {repo}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
