"""API keys for the OpenAI-compatible gateway (:mod:`tritonforge.gateway`).

Keys come from a file (one per line; blank lines and lines starting with ``#`` are skipped) and/or the
``TRITONFORGE_API_KEYS`` environment variable (comma separated). A request carries ``Authorization: Bearer <key>``.
The presented key is compared with *every* configured key with :func:`hmac.compare_digest` (no early exit), so the
time taken says neither which key nor how much of one matched. No keys configured: the gateway is open.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from tritonforge.errors import OptionError, unreadable
from tritonforge.gateway.file_watch import FileState, FileWatch
from tritonforge.triton.options import is_loopback  # re-exported: the CLI checks the gateway's bind address

ENV_VAR = "TRITONFORGE_API_KEYS"
CHECK_SECONDS = 1.0  # a key file is looked at (stat) at most this often
LOG = logging.getLogger(__name__)

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
        raise OptionError(f"key file {path}: {unreadable(err)}") from None
    keys = _clean(text.splitlines())
    for key in keys:
        if any(c.isspace() for c in key):
            raise OptionError(f"{path}: an API key must not contain whitespace")
    if not keys:
        raise OptionError(f"key file {path} holds no key (one per line; '#' starts a comment)")
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
    """Checks ``Authorization`` header values against a set of keys in constant time (per configured key).

    With ``path``, the keys are the file's (and ``keys``, e.g. the environment's) and the file is read again when
    it changes (checked at most once a second, read once it has settled, see file_watch): a key revoked
    or rotated in the file (a Kubernetes Secret updates its mounted file in place) took a restart. A file that
    becomes unreadable or empty keeps the keys it had: it never opens the gateway."""

    def __init__(self, keys: Collection[str] | None, *, path: str | Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fixed = _clean(keys or ())
        self.path = Path(path) if path is not None else None
        self._keys: tuple[bytes, ...] = ()
        self._watch: FileWatch | None = None
        if self.path is not None:
            self._watch = FileWatch(self.path, self._file_changed, interval=CHECK_SECONDS, clock=clock)
            self._set([*parse_key_file(self.path), *self._fixed])
        else:
            self._set(self._fixed)

    def _set(self, keys: Iterable[str]) -> None:
        self._keys = tuple(k.encode("utf-8") for k in _clean(keys))

    def refresh(self) -> None:
        """Read the key file again if it changed (a bad file is logged; the keys stay)."""
        if self._watch is not None:
            self._watch.poll()

    def _file_changed(self, state: FileState | None) -> bool:
        assert self.path is not None
        if state is None:
            return False  # gone for now (a Secret's update swaps a link): the keys stay, and it is looked at again
        try:
            keys = parse_key_file(self.path)
        except ValueError as err:
            LOG.error("keeping the previous API keys: %s", err)
            return True
        self._set([*keys, *self._fixed])
        LOG.info("API keys re-read from %s: %d key(s)", self.path, len(self._keys))
        return True

    @property
    def enabled(self) -> bool:
        self.refresh()
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
        self.refresh()
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
        self.refresh()
        if not self._keys:
            return True
        return self.check_key(self.bearer(header))

