"""`tritonforge release ...`: immutable numbered versions of a served repository (add, list, promote, roll back,
pin), thin over tritonforge.releases. cli.py adds it to the command line as `release`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from tritonforge.cli_output import console, err_console, fail, styled
from tritonforge.cli_paths import path_arg
from tritonforge.errors import ReleaseInterrupted, TritonForgeError
from tritonforge.stop_signals import exit_code

release_app = typer.Typer(no_args_is_help=True, help="Immutable numbered versions: add, list, promote, roll back, pin.",
                          rich_markup_mode=None)  # as the main app's (cli.py)

# a str: typer makes Path("") of an empty value, the current folder; releases refuse "" by name
RepoOpt = Annotated[str, typer.Option("--repo", envvar="TRITONFORGE_REPO", help="the served model repository folder")]
TritonOpt = Annotated[
    str | None,
    typer.Option(
        "--triton",
        help="the Triton to apply the change to: its HTTP host:port, or grpc://host:port (default: the files only)",
    ),
]
AdminKeyOpt = Annotated[
    str | None,
    typer.Option("--admin-key", envvar="TRITONFORGE_ADMIN_KEY", help="the key `tritonforge serve` printed"),
]


def _control(triton: str | None, admin_key: str | None) -> object | None:
    from tritonforge.releases import TritonControl

    return TritonControl(triton, admin_key=admin_key) if triton else None


def _fail(err: TritonForgeError) -> NoReturn:
    """``fail``, but a change a stop signal came during ends as that signal asked (130 Ctrl-C, 143 SIGTERM), after
    saying what serves: it was held until Triton had finished loading and the files agreed with it."""
    if isinstance(err, ReleaseInterrupted):
        # after SIGHUP the terminal may be gone: the exit code must not depend on the message getting out
        with contextlib.suppress(OSError, SystemExit):
            err_console.print(styled("bold yellow", "stopped:", f" {err}"))
        raise typer.Exit(exit_code(err.signum))
    fail(err)


def _changed(change: object, triton: str | None) -> None:
    from tritonforge.releases import Change

    assert isinstance(change, Change)
    was = ", ".join(map(str, change.previous)) or "none"
    console.print(styled("green", f"{change.action}", f" {change.model}: version {change.version} (was {was})"))
    if change.action in ("promote", "rollback", "pin") and not change.applied and triton is None:
        console.print(
            styled("yellow", "note:", " files only; a running Triton serves it after `--triton HOST:PORT` or a load")
        )


@release_app.command("list")
def release_list(
    repo: RepoOpt = "model_repository",
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list, one object per version")] = False,
) -> None:
    """Every model's versions: which serves, pins, the rollback target and lineage."""
    from tritonforge.cli_output import release_json, release_table
    from tritonforge.releases import list_releases

    try:
        models = list_releases(repo)
    except TritonForgeError as err:
        fail(err)
    if as_json:
        print(release_json(models))  # plain: Rich would re-flow it and colour it
    elif not models:  # an empty table would not say that the folder is probably the wrong one
        console.print(styled("yellow", "note:", f" {repo} holds no models (no sub-folder with a config.pbtxt)"))
    else:
        console.print(release_table(str(repo), models))


@release_app.command("add")
def release_add(
    source: Annotated[
        Path, typer.Option("--from", help="a freshly built repository holding the new versions", parser=path_arg)
    ],
    repo: RepoOpt = "model_repository",
    model: Annotated[list[str] | None, typer.Option("--model", help="only these models (repeatable)")] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option("--eval", help="JSON file of evaluation numbers, recorded in the lineage", parser=path_arg),
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="training data (file or folder): its hash is recorded", parser=path_arg)
    ] = None,
    note: Annotated[str | None, typer.Option(help="free text recorded in the lineage")] = None,
) -> None:
    """Add the source's new versions as the next version numbers (not serving until promoted)."""
    from tritonforge.lineage import file_or_folder_hash
    from tritonforge.releases import add_versions, ensemble_changes

    try:
        scores = None
        if evaluation is not None:
            try:
                scores = json.loads(evaluation.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise typer.BadParameter(f"{evaluation}: {err}", param_hint="--eval") from None
            if not isinstance(scores, dict):
                raise typer.BadParameter(f"{evaluation} must hold a JSON object", param_hint="--eval")
        if dataset is not None and not dataset.exists():
            raise typer.BadParameter(f"{dataset} does not exist", param_hint="--dataset")
        added = add_versions(
            repo,
            source,
            model or None,
            evaluation=scores,
            dataset_sha256=file_or_folder_hash(dataset) if dataset is not None else None,
            note=note,
        )
        skipped = ensemble_changes(repo, source, model or None)  # add skips ensembles: say which ones changed
    except TritonForgeError as err:
        fail(err)
    if not added:
        console.print("nothing to add: every model's files equal what serves" + (
            "; an ensemble's config differs, which a release does not change (below)" if skipped else ""
        ))
    for text in skipped.values():
        err_console.print(styled("yellow", "not added:", f" {text}"))
    for name, version in added.items():
        console.print(
            styled("green", "added", f" {name} version {version} (serve it: `release promote {name} {version}`)")
        )


@release_app.command("promote")
def release_promote(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version number to serve")],
    repo: RepoOpt = "model_repository",
    triton: TritonOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Serve VERSION of MODEL; the old version serves until the new one is ready, and stays if it fails to load."""
    from tritonforge.releases import promote

    try:
        _changed(promote(repo, model, version, control=_control(triton, admin_key)), triton)  # type: ignore[arg-type]
    except TritonForgeError as err:
        _fail(err)


@release_app.command("rollback")
def release_rollback(
    model: Annotated[str, typer.Argument(help="model name")],
    repo: RepoOpt = "model_repository",
    triton: TritonOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Serve the version promoted before the current one."""
    from tritonforge.releases import rollback

    try:
        _changed(rollback(repo, model, control=_control(triton, admin_key)), triton)  # type: ignore[arg-type]
    except TritonForgeError as err:
        _fail(err)


@release_app.command("pin")
def release_pin(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int | None, typer.Argument(help="default: the version serving now")] = None,
    repo: RepoOpt = "model_repository",
    triton: TritonOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Freeze MODEL on VERSION: promote and rollback are refused until `release unpin`."""
    from tritonforge.releases import pin

    try:
        _changed(pin(repo, model, version, control=_control(triton, admin_key)), triton)  # type: ignore[arg-type]
    except TritonForgeError as err:
        _fail(err)


@release_app.command("unpin")
def release_unpin(
    model: Annotated[str, typer.Argument(help="model name")],
    repo: RepoOpt = "model_repository",
) -> None:
    """Allow promote and rollback of MODEL again."""
    from tritonforge.releases import unpin

    try:
        _changed(unpin(repo, model), None)
    except TritonForgeError as err:
        fail(err)
