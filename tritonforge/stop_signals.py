"""The signals a long-running command stops on, and how a handler records one without blocking.

``serve``, ``bench`` and the server launcher all stop on the same three: SIGINT (Ctrl-C), SIGTERM (a supervisor)
and SIGHUP (the terminal closed, an ssh session dropped: left at its default it ended the process without any
cleanup). A handler runs on the main thread between two bytecodes, so it must not take a lock the main thread may
hold at that moment: ``threading.Event.set()`` takes the lock its ``wait()``/``set()`` holds, and a signal landing
there deadlocks the process, and so does ``Thread.start()`` (it takes threading's own lock). Handlers here only
append to a list; a thread started beforehand turns that into what wakes the others.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
WATCH_S = 0.05  # how often StopOnSignals' watcher looks for a recorded signal


def not_ignored(signums: tuple[int, ...] = STOP_SIGNALS) -> tuple[int, ...]:
    """The stop signals this process was not started ignoring. ``nohup`` ignores SIGHUP and a shell's ``cmd &``
    without job control ignores SIGINT: a handler of ours on those would undo what the user asked for."""
    return tuple(s for s in signums if signal.getsignal(s) != signal.SIG_IGN)


def exit_code(signum: int) -> int:
    """The code a process ended by ``signum`` reports to a shell (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + signum


class StopOnSignals:
    """Within ``with``: the first stop signal sets ``stop`` (its number kept in ``caught``) instead of ending the
    process, so a benchmark stops sending and keeps the levels it completed. A second one ends it at once, through
    the handler that was there before (SIGINT's KeyboardInterrupt, the CLI's SIGTERM exit) or, where that was the
    default action, through SystemExit with the signal's exit code, so ``finally`` blocks still run.

    Outside the main thread (where Python allows no handlers) it does nothing: ``stop`` is then only set by hand.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.caught: list[int] = []
        self._previous: dict[int, Any] = {}
        self._left = threading.Event()

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.getsignal(signum) for signum in not_ignored()}
            for signum in self._previous:
                signal.signal(signum, self._handle)
            # the handler only appends; this thread, started here and not in the handler (Thread.start() takes a
            # lock the interrupted main thread may hold, as Event.set() does), turns the first signal into `stop`
            threading.Thread(target=self._watch, name="stop-signals", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._left.wait(WATCH_S):
            if self.caught:
                self.stop.set()
                return

    def _handle(self, signum: int, frame: Any) -> None:
        self.caught.append(signum)
        if len(self.caught) == 1:
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        else:  # the default action, which for SIGHUP and SIGTERM skipped every cleanup
            raise SystemExit(exit_code(signum))

    def __exit__(self, *_: object) -> None:
        self._left.set()
        if self.caught:  # the last moments before leaving: what the watcher had not seen yet
            self.stop.set()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
