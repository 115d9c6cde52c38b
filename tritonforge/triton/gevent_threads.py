"""What tritonclient's HTTP client, which runs on gevent, needs from the threads and processes that use it.

- A forked child inherits gevent's hub in the parent's state: an HTTP client the child made hung for good, deadline
  or not (API audit). gevent.reinit() runs in the child, registered once per process (it returns at once where the
  forking thread has no hub, as in a subprocess launch).
- gevent leaves every thread that used it a hub it never frees, even once the thread ends (gevent issue 1601; its
  Hub.destroy at the thread's exit did not release them either): measured, 2 file descriptors and ~55 KB per thread,
  so a server running each request on a new thread hit the fd limit after ~500 requests, as "Too many open files".
  It is said once the count of such threads passes 64, 256, 1024 and 4096, with what to do instead.
"""

from __future__ import annotations

import logging
import os
import threading

LOG = logging.getLogger("tritonforge.triton.connection")  # the connection's: where its user looks
_LOCK = threading.Lock()
_FORK_HOOK: list[bool] = []
_THIS_THREAD = threading.local()  # .counted: this thread has made an HTTP transport
_THREADS = [0]  # threads that have, in this process
WARN_AT = (64, 256, 1024, 4096)


def prepare_this_thread() -> None:
    """Before this thread makes an HTTP transport: the fork hook, and this thread counted."""
    with _LOCK:
        if not _FORK_HOOK:
            import gevent

            os.register_at_fork(after_in_child=gevent.reinit)
            _FORK_HOOK.append(True)
        if getattr(_THIS_THREAD, "counted", False):
            return
        _THIS_THREAD.counted = True
        _THREADS[0] += 1
        count = _THREADS[0]
    if count in WARN_AT:
        LOG.warning("the HTTP client has now been used from %d threads: gevent keeps a hub (2 file descriptors, "
                    "~55 KB) for each, even once it ends; call it from long-lived threads (a pool) or use gRPC", count)
