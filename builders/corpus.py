"""Load the passages a retrieval index is built from.

Two layouts are read:

* a JSONL file (``.jsonl`` or ``.ndjson``): one JSON object per line with a string ``id``, a string ``text`` and an
  optional ``metadata`` object; blank lines are skipped, any other key is refused (put extra fields under
  ``metadata``);
* a folder of UTF-8 ``.txt`` files: one passage per file, id = file stem, text = the file's content without
  leading/trailing whitespace, metadata = ``{"source": <file name>}``, in file-name order. Hidden files are
  ignored; any other file or sub-folder is refused rather than silently skipped.

Every problem is collected and reported at once in one BuildError (also available as ``error.problems``), each
located as ``file:line`` (JSONL) or by file name (folder). Ids must be non-empty strings without line breaks and
unique across the corpus; texts must not be empty after stripping whitespace.

Only the standard library is imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.errors import BuildError, Problem

JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIX = ".txt"
KEYS = ("id", "text", "metadata")


@dataclass(frozen=True)
class Passage:
    """One retrievable unit of text; ``id`` is what the retriever returns in DOC_IDS."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_corpus(path: Path) -> list[Passage]:
    """Read a JSONL corpus or a folder of ``.txt`` files; BuildError listing every problem found."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BuildError(f"corpus {path} does not exist: give a .jsonl file or a folder of .txt files")
    problems: list[Problem] = []
    if path.is_dir():
        passages = _load_folder(path, problems)
    elif path.suffix.lower() in JSONL_SUFFIXES:
        passages = _load_jsonl(path, problems)
    else:
        raise BuildError(
            f"corpus {path}: unknown file type {path.suffix or '(no suffix)'!r}; "
            f"use a JSONL file ({', '.join(JSONL_SUFFIXES)}) or a folder of {TEXT_SUFFIX} files"
        )
    if not passages and not problems:
        problems.append(Problem(str(path), "corpus is empty: it holds no passages"))
    if problems:
        error = BuildError(
            f"corpus {path} is invalid ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
            + "\n".join(f"  {p}" for p in problems)
        )
        error.problems = tuple(problems)  # type: ignore[attr-defined]
        error.headline = f"corpus {path} is invalid"  # type: ignore[attr-defined]  # the CLI lists the problems
        raise error
    return passages


# ------------------------------------------------------------------------------------------------------ internals


def id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a passage id, or None when it can."""
    if not isinstance(value, str):
        return f"'id' must be a string, got {type(value).__name__} {value!r}"
    if not value.strip():
        return f"'id' must be a non-empty string, got {value!r}"
    if "\n" in value or "\r" in value:
        return f"'id' must not contain line breaks, got {value!r}"
    return None


def _load_jsonl(path: Path, problems: list[Problem]) -> list[Passage]:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BuildError(f"corpus {path} cannot be read: {err.strerror or err}") from err
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark written by some editors
        raw = raw[3:]
    passages: list[Passage] = []
    first_line: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{number}"
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(Problem(where, f"not valid UTF-8 ({err.reason} at byte {err.start})"))
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(where, f"invalid JSON: {err.msg} (column {err.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(where, f"expected a JSON object with 'id' and 'text', got {type(obj).__name__}"))
            continue
        line_ok = True
        unknown = sorted(set(obj) - set(KEYS))
        if unknown:
            problems.append(
                Problem(
                    where,
                    f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                    f"(allowed: {', '.join(KEYS)}; put extra fields under 'metadata')",
                )
            )
            line_ok = False
        if "id" not in obj:
            problems.append(Problem(where, "missing 'id' (a non-empty string)"))
            line_ok = False
        else:
            why = id_problem(obj["id"])
            if why:
                problems.append(Problem(where, why))
                line_ok = False
            elif obj["id"] in first_line:
                problems.append(
                    Problem(where, f"duplicate id {obj['id']!r} (first used at {path}:{first_line[obj['id']]})")
                )
                line_ok = False
            else:
                first_line[obj["id"]] = number
        if "text" not in obj:
            problems.append(Problem(where, "missing 'text' (a non-empty string)"))
            line_ok = False
        elif not isinstance(obj["text"], str):
            problems.append(Problem(where, f"'text' must be a string, got {type(obj['text']).__name__}"))
            line_ok = False
        elif not obj["text"].strip():
            problems.append(Problem(where, "'text' is empty (only whitespace)"))
            line_ok = False
        metadata = obj.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            problems.append(Problem(where, f"'metadata' must be a JSON object, got {type(metadata).__name__}"))
            line_ok = False
        if line_ok:
            passages.append(Passage(id=obj["id"], text=obj["text"], metadata=metadata))
    return passages


def _load_folder(folder: Path, problems: list[Problem]) -> list[Passage]:
    passages: list[Passage] = []
    first_file: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        where = str(entry)
        if entry.is_dir():
            problems.append(Problem(where, f"sub-folders are not read; a corpus folder holds only {TEXT_SUFFIX} files"))
            continue
        if entry.suffix.lower() != TEXT_SUFFIX:
            problems.append(
                Problem(
                    where,
                    f"unknown file type {entry.suffix or '(no suffix)'!r}; a corpus folder holds only "
                    f"{TEXT_SUFFIX} files (one passage each)",
                )
            )
            continue
        passage_id = entry.stem
        why = id_problem(passage_id)
        if why:
            problems.append(Problem(where, f"file name gives a bad id: {why}"))
            continue
        try:
            text = entry.read_bytes().decode("utf-8-sig").strip()
        except UnicodeDecodeError as err:
            problems.append(Problem(where, f"not valid UTF-8 ({err.reason} at byte {err.start})"))
            continue
        except OSError as err:
            problems.append(Problem(where, f"cannot be read: {err.strerror or err}"))
            continue
        if not text:
            problems.append(Problem(where, "text is empty (only whitespace)"))
            continue
        if passage_id in first_file:  # e.g. a.txt and a.TXT
            problems.append(Problem(where, f"duplicate id {passage_id!r} (also from {first_file[passage_id]})"))
            continue
        first_file[passage_id] = where
        passages.append(Passage(id=passage_id, text=text, metadata={"source": entry.name}))
    return passages
