"""The sha256 of a file's bytes, read in 1 MiB blocks: one copy for every layer that fingerprints a file (a GGUF
download, an object-store push, a release's lineage). ``hashlib.file_digest`` would do, from Python 3.11; the
package supports 3.10."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
