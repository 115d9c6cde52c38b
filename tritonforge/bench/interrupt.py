"""Ctrl-C and SIGTERM as a request to stop a benchmark, not the end of the process: the levels measured are kept."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopOnSignals:
    """Within ``with``: the first SIGINT or SIGTERM sets ``stop`` (its number kept in ``caught``) instead of ending
    the process, so the benchmark stops sending and keeps the levels it completed. A second signal ends it as
    usual (the previous handlers are back from the first one on)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.caught: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():  # signal handlers belong to the main thread
            self._previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
            for signum in self._previous:
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.caught.append(signum)
        self.stop.set()
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __exit__(self, *_: object) -> None:
        self._restore()
