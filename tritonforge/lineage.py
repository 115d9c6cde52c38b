"""Lineage manifests: what each model version folder was built from.

Every version folder a build writes carries ``lineage.json``: the spec entry and its build settings, the content
hashes of the artifacts (checkpoint or engine, adapters, corpus), parity numbers, and — when a release adds the
version — the dataset hash and evaluation numbers the user gives. Releases (``tritonforge.releases``) read it to
say what is serving and to tell an unchanged version from a new one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tritonforge.file_hash import file_sha256

LINEAGE_FILE = "lineage.json"


def file_or_folder_hash(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's sorted relative names and contents (hidden files skipped)."""
    from tritonforge.builders.checkpoints import checkpoint_hash

    path = Path(path)
    if path.is_dir():
        return checkpoint_hash(path)
    return file_sha256(path)


def served_files(folder: Path) -> list[Path]:
    """What a version folder serves, sorted: every file but its lineage manifest and the ``__pycache__`` bytecode
    Triton's python backend writes into a served version folder when it imports model.py (one rule for the release
    hash and validate's size check)."""
    folder = Path(folder)
    return sorted(
        q
        for q in folder.rglob("*")
        if q.is_file() and q.name != LINEAGE_FILE and "__pycache__" not in q.relative_to(folder).parts
    )


def version_content_hash(folder: Path) -> str:
    """sha256 over what a version folder serves (names and bytes of ``served_files``)."""
    h = hashlib.sha256()
    folder = Path(folder)
    for p in served_files(folder):
        rel = p.relative_to(folder).as_posix().encode()
        h.update(len(rel).to_bytes(8, "big") + rel + p.stat().st_size.to_bytes(8, "big"))
        with p.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def lineage_record(
    *,
    spec_name: str,
    target: str,
    spec_model: str,
    kind: str,
    settings: Mapping[str, Any],
    artifacts: Iterable[Mapping[str, Any]],
    inputs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest of one freshly built version (``inputs``: name → content hash of what it was built from)."""
    from tritonforge import __version__

    return {
        "built_by": f"tritonforge {__version__}",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec_name,
        "target": target,
        "spec_model": spec_model,
        "kind": kind,
        "settings": dict(settings),
        "artifacts": [dict(a) for a in artifacts],
        "inputs": dict(inputs or {}),
    }


def lineage_bytes(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def read_lineage(version_dir: Path) -> dict[str, Any] | None:
    path = Path(version_dir) / LINEAGE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


FILES_KEY = "files"  # in lineage.json: {relative path: size in bytes} of every file the build wrote in the folder


def record_files(version_dir: Path) -> None:
    """Add the folder's file sizes to its lineage.json, once every file is written: validate then tells a copy
    cut short (a model.onnx truncated by an interrupted rsync passed every check, and failed only when served)."""
    record = read_lineage(version_dir)
    if record is not None:
        folder = Path(version_dir)
        record[FILES_KEY] = {q.relative_to(folder).as_posix(): q.stat().st_size for q in served_files(folder)}
        (folder / LINEAGE_FILE).write_bytes(lineage_bytes(record))


def missing_or_cut(version_dir: Path) -> list[str]:
    """The files lineage.json lists that are missing or of another size (a stat each, no reading: cheap enough for
    every validate, where hashing a checkpoint of gigabytes is not); none for a folder without the record."""
    record = read_lineage(version_dir)
    listed = record.get(FILES_KEY) if record is not None else None
    if not isinstance(listed, dict):
        return []
    found = []
    for name, size in sorted(listed.items()):
        path = Path(version_dir) / name
        try:
            actual = path.stat().st_size
        except OSError:
            found.append(f"{name} is missing")
            continue
        if isinstance(size, int) and actual != size:
            found.append(f"{name} is {actual:,} bytes, the build wrote {size:,}")
    return found


def damage(version_dir: Path) -> str | None:
    """``missing_or_cut``'s first three findings as one text ("a.bin is 400 bytes, the build wrote 1,000; …"), for
    validate's and release add's messages; None when the folder is as its build wrote it."""
    cut = missing_or_cut(version_dir)
    return f"{'; '.join(cut[:3])}{' …' if len(cut) > 3 else ''}" if cut else None
