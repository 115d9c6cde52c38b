"""Noticing that a file the gateway reads (API keys, admin keys, splits) changed, cheaply, on the request path.

Both readers look at their file at most once per interval (one ``stat``), and read it only once it has not changed
for SETTLE_SECONDS: ``cat > file`` truncates first and writes after, and a read in between saw an empty file (every
split dropped). What a reader does with a change differs, so it is the reader's callback: a split file that is gone
is an error to report, a key file that is gone for a moment (a Kubernetes Secret's update swaps a link) keeps its
keys silently.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

SETTLE_SECONDS = 0.3  # a file changed this recently may still be being written: it is read at a later check


class FileState(NamedTuple):
    mtime_ns: int
    size: int
    inode: int  # a Secret or ConfigMap update swaps a link to a new file, which can keep the size and mtime


def file_state(path: Path) -> FileState | None:
    """The file's state, following links; None if it cannot be stat'ed (gone, or no permission)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileState(st.st_mtime_ns, st.st_size, st.st_ino)


class FileWatch:
    """Calls ``on_change(state)`` from :meth:`poll` when ``path`` changed since the state last taken.

    ``on_change`` gets None when the file is gone and returns whether it took the change: a change not taken is
    offered again at the next check. :meth:`take` records the current state (after a read outside ``poll``).
    """

    def __init__(
        self,
        path: Path,
        on_change: Callable[[FileState | None], bool],
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.interval = interval
        self.clock = clock
        self.state = file_state(path)
        self._next_check = -math.inf
        self._lock = threading.Lock()

    def take(self) -> FileState | None:
        """Record the file's state now (call before reading it: a change during the read is seen next time)."""
        self.state = file_state(self.path)
        return self.state

    def poll(self) -> None:
        if self.clock() < self._next_check:  # the fast path: a clock comparison
            return
        with self._lock:
            now = self.clock()
            if now < self._next_check:
                return
            self._next_check = now + self.interval
            state = file_state(self.path)
            if state == self.state:
                return
            if state is not None and 0 <= time.time() - state.mtime_ns / 1e9 < SETTLE_SECONDS:
                return  # still being written (a rewrite in place is read half-done): read it at a later check
            if self.on_change(state):
                self.state = state
