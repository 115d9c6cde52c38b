"""Finished BLS response iterators kept past their end: shipped beside each python model that iterates a decoupled
BLS call on threads of its own (rag_generate, rag_bls, llm_bls; python_backends.SHARED). Only the standard library."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any


class Retired:
    """Finished BLS response iterators, each kept ``seconds`` after its end and then dropped by a Python thread.

    Why: in Triton 2.51's python backend (NGC 24.10, the cpu target's server) the stub's own message thread erases a
    finished iterator from its map after the final response. When that erase held the last reference, the iterator's
    responses freed their numpy arrays on that native thread without the GIL, and the stub died of a segfault now
    and then: the rag answer step's, 1-3 times in 15 minutes at 8 streams in flight, and once the whole server with it
    (docs/serving.md). Upstream's fix takes the GIL there (python_backend PR #390, December 2024; the NGC 26.x images
    the gpu target deploys have it). Kept here past the erase, the last reference is always Python's."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self.kept: collections.deque[tuple[float, Any]] = collections.deque()  # (when it ended, iterator), oldest first
        self.lock = threading.Lock()

    def keep(self, iterator: Any) -> None:
        now = time.monotonic()
        with self.lock:
            self.kept.append((now, iterator))
            while now - self.kept[0][0] > self.seconds:
                self.kept.popleft()  # the last reference, released on this thread (which holds the GIL)
