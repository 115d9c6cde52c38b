"""The command line's file and folder arguments: one parser for every Path argument and option of cli.py and
cli_release.py, refusing an empty value by name. Without it typer makes Path("") of one, the current folder, so an
unset shell variable (``tritonforge deploy k8s "$REPO"``, ``push "$REPO"``, ``release add --from "$NEW"``) rendered,
pushed or released whatever folder the command was run in, and ``demo --out ""`` wrote into it."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_core import PydanticCustomError


def path_arg(value: str | os.PathLike[str]) -> Path:
    """``value`` as a Path; an empty (or blank) value is refused, for typer to report as the argument's error
    ("Invalid value for 'repo': '' is not a path: ..."), exit 2. Use it as ``typer.Argument(parser=path_arg)`` or
    ``typer.Option(parser=path_arg)``; None (an option not given) never reaches it."""
    if isinstance(value, str) and not value.strip():
        # PydanticCustomError: typer (0.29) reads its message as is (a ValueError's would show "Value error, ...");
        # it is a ValueError too, which click's FuncParamType (older typer) reports the same way
        why = "'{value}' is not a path: name a file or folder ('.' for the current folder)"
        raise PydanticCustomError("empty_path", why, {"value": value})
    return Path(value)
