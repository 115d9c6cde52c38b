"""API keys for the OpenAI-compatible gateway (:mod:`tritonforge.gateway`).

Keys come from a file (one per line; blank lines and lines starting with ``#`` are skipped) and/or the
``TRITONFORGE_API_KEYS`` environment variable (comma separated). A request carries ``Authorization: Bearer <key>``.
The presented key is compared with *every* configured key with :func:`hmac.compare_digest` (no early exit), so the
time taken says neither which key nor how much of one matched. No keys configured: the gateway is open.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from tritonforge.errors import unreadable
from tritonforge.triton.options import is_loopback  # re-exported: the CLI checks the gateway's bind address

ENV_VAR = "TRITONFORGE_API_KEYS"

__all__ = ["ENV_VAR", "KeyChecker", "is_loopback", "load_api_keys", "parse_env_keys", "parse_key_file"]


def _clean(keys: Iterable[str]) -> list[str]:
    out: list[str] = []
    for raw in keys:
        key = raw.strip()
        if key and not key.startswith("#") and key not in out:
            out.append(key)
    return out


def parse_key_file(path: str | Path) -> list[str]:
    """The keys of a key file: one per line, surrounding whitespace, blank lines and ``#`` comments ignored.

    A file that cannot be read, or holds no key, is a ValueError naming it: a key file given but empty would
    otherwise leave what it should guard open to anyone."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"key file {path}: {unreadable(err)}") from None
    keys = _clean(text.splitlines())
    for key in keys:
        if any(c.isspace() for c in key):
            raise ValueError(f"{path}: an API key must not contain whitespace")
    if not keys:
        raise ValueError(f"key file {path} holds no key (one per line; '#' starts a comment)")
    return keys


def parse_env_keys(value: str | None) -> list[str]:
    """The keys of ``TRITONFORGE_API_KEYS``: comma separated, whitespace around each trimmed, empties dropped."""
    return _clean((value or "").split(","))


def load_api_keys(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Keys from ``path`` (if given) and from the ``TRITONFORGE_API_KEYS`` variable of ``environ`` (default:
    ``os.environ``), de-duplicated in that order. An empty list means no access control."""
    env = os.environ if environ is None else environ
    keys = parse_key_file(path) if path is not None else []
    return _clean([*keys, *parse_env_keys(env.get(ENV_VAR))])


class KeyChecker:
    """Checks ``Authorization`` header values against a set of keys in constant time (per configured key)."""

    def __init__(self, keys: Collection[str] | None) -> None:
        self._keys: tuple[bytes, ...] = tuple(k.encode("utf-8") for k in _clean(keys or ()))

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @staticmethod
    def bearer(header: str | None) -> str | None:
        """The token of ``Bearer <token>`` (scheme case-insensitive), or None."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return token

    def check_key(self, presented: str | None) -> bool:
        """True if ``presented`` equals one of the keys; every key is compared, whatever matched before."""
        if not self._keys:
            return True
        candidate = (presented or "").encode("utf-8")
        matched = False
        for key in self._keys:
            # compare_digest takes time that depends on the length of its arguments, not on where they differ
            matched |= hmac.compare_digest(candidate, key)
        return matched and presented is not None

    def check_header(self, header: str | None) -> bool:
        """True if the ``Authorization`` header carries a valid bearer key (always True with no keys configured)."""
        if not self._keys:
            return True
        return self.check_key(self.bearer(header))

