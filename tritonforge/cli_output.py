"""What the command line prints, kept out of cli.py: the consoles (tables keep every cell whole when piped, nothing is
read as Rich markup), how an error is printed, and the release listing (a table, or JSON for scripts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.align import AlignMethod
from rich.console import Console, ConsoleDimensions
from rich.rule import Rule
from rich.style import Style
from rich.table import Table
from rich.text import Text, TextType

from tritonforge.errors import TritonForgeError

if TYPE_CHECKING:  # cli.py imports this module at start: the releases module loads only for `release` commands
    from tritonforge.releases import ModelReleases

# Not a terminal: nobody reads the lines at a width, and Rich's fallback (80 columns, or the width of a terminal on
# stdin) cut paths, versions and hashes to "…" in `tritonforge release list | grep`. Tables do not expand, so each
# one is printed at its natural width, which stays far below this.
PIPE_WIDTH = 100_000
RULE_WIDTH = 80  # a rule fills the width it is given: piped, it gets a terminal's, not PIPE_WIDTH


class CliConsole(Console):
    """A Console that, when its output is not a terminal and no width was asked for (``width=``, ``$COLUMNS``),
    is as wide as what it prints: table cells are never cut or wrapped."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and not self._environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(PIPE_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def rule(
        self,
        title: TextType = "",
        *,
        characters: str = "─",
        style: str | Style = "rule.line",
        align: AlignMethod = "center",
    ) -> None:
        if self.width < PIPE_WIDTH:
            super().rule(title, characters=characters, style=style, align=align)
        else:
            self.print(Rule(title=title, characters=characters, style=style, align=align), width=RULE_WIDTH)


def release_rows(models: Sequence[ModelReleases]) -> list[dict[str, Any]]:
    """One object per version, with what the table shows: the machine-readable form of `release list`."""
    rows = []
    for m in models:
        for v in m.versions:
            lineage = v.lineage or {}
            release = lineage.get("release", {})
            keys = [a.get("content_hash", "") for a in lineage.get("artifacts", [])]
            rows.append({
                "model": m.model,
                "version": v.version,
                "serving": v.serving,
                "pinned": m.pinned == v.version,
                "rollback_to": m.previous if v.serving else None,
                "built": release.get("added_at") or lineage.get("built_at") or None,
                # the version folder's own hash: what tells versions apart (the artifact keys did not: a key names
                # what an artifact was built from, and versions with different files shared it)
                "content": v.content_sha256(),
                "artifact_keys": [k for k in keys if k],  # the build cache's keys of the version's artifacts
                "evaluation": release.get("evaluation") or None,
            })
    return rows


def release_json(models: Sequence[ModelReleases]) -> str:
    return json.dumps(release_rows(models), indent=2)


def release_table(title: str, models: Sequence[ModelReleases]) -> Table:
    table = Table(title=title)
    for col in ("model", "version", "serving", "pinned", "rollback to", "built", "content", "artifact keys",
                "evaluation"):
        table.add_column(col)
    for row in release_rows(models):
        table.add_row(
            row["model"],
            str(row["version"]),
            Text("yes", style="green") if row["serving"] else "",
            "yes" if row["pinned"] else "",
            "" if row["rollback_to"] is None else str(row["rollback_to"]),
            str(row["built"] or ""),
            (row["content"] or "")[:12],  # a prefix names a version; --json has the whole hash
            " ".join(k[:12] for k in row["artifact_keys"]),
            json.dumps(row["evaluation"]) if row["evaluation"] else "",
        )
    return table


# markup=False: what is printed (errors, Triton's log, paths, model output) is never read as Rich markup, which
# dropped "[libprotobuf ERROR ...]" from messages and raised MarkupError on a "[/x]"; soft_wrap: no inserted newlines
# CliConsole: piped into a file or grep, tables are as wide as their cells (Rich's fallback of 80 columns cut them)
err_console = CliConsole(stderr=True, markup=False, soft_wrap=True)
console = CliConsole(markup=False, soft_wrap=True)


def styled(style: str, label: str, rest: object = "") -> Text:
    """``label`` in ``style``, then ``rest`` as plain text."""
    return Text.assemble((label, style), str(rest))


def fail(err: TritonForgeError) -> NoReturn:
    """Print ``err`` and exit 1: its headline to stderr, then every problem on a line of its own to stdout (the
    command's findings, for pipes and grep); an error without problems goes to stderr whole."""
    problems = getattr(err, "problems", None)
    if problems:
        headline = getattr(err, "headline", err)
        err_console.print(styled("bold red", f"{headline}", f" ({len(problems)} problem{'s' * (len(problems) != 1)})"))
        for p in problems:
            # plain print, on stdout as linters print their findings: users pipe and grep these lines (`validate
            # repo | grep config.pbtxt`), and Rich must not wrap or re-style them
            print(str(p), flush=True)
    else:
        err_console.print(styled("bold red", "error:", f" {err}"))
    raise typer.Exit(1)


# the import name of what each extra brings -> the extra: a command run without its extra named the module only
# (ModuleNotFoundError: No module named 'jinja2', from `deploy k8s` on a base install: packaging audit)
EXTRA_OF_MODULE = {
    **dict.fromkeys(("torch", "transformers", "onnxruntime", "onnx", "onnxscript", "tokenizers", "peft", "gguf",
                     "faiss", "pytriton", "matplotlib"), "cpu"),
    **dict.fromkeys(("starlette", "uvicorn", "orjson", "prometheus_client"), "gateway"),
    **dict.fromkeys(("jinja2", "boto3", "botocore"), "deploy"),
    "tensorrt_llm": "gpu",
}


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """The extra that brings the module ``err`` is about, or None when it is not one of an extra's."""
    return EXTRA_OF_MODULE.get((err.name or "").split(".")[0])
