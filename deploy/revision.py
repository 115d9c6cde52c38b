"""A built repository's release revision: what `deploy k8s` annotates the pod template with and `push --release`
names the object-store prefix after, so a rendered Deployment and the files its pods read name the same release."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tritonforge.build_manifest import MANIFEST_NAME
from tritonforge.lineage import LINEAGE_FILE

REVISION = re.compile(r"[0-9a-f]{16}")  # what repository_revision returns: a prefix's last segment of this form


def repository_revision(repo: Path) -> str:
    """A digest of what the repository serves, cheap to take: its build record, every config and every version's
    lineage (which holds the content hashes of its artifacts). In the pod template, a new build or a promotion
    rendered again changes the template, so `kubectl apply` rolls the pods onto it (they read the repository only
    at start: a push alone changed nothing until some pod restarted, and then pods served different releases)."""
    digest = hashlib.sha256()
    repo = Path(repo)
    files = [repo / MANIFEST_NAME, *repo.glob("*/config.pbtxt"), *repo.glob(f"*/*/{LINEAGE_FILE}")]
    for path in sorted(p for p in files if p.is_file()):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
