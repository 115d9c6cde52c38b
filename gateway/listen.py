"""The gateway's listening socket, bound before anything starts, and uvicorn serving on it.

uvicorn binds its own socket only once it runs: an address in use or not of this host then shows as uvicorn's log
line and exit code 3, after `tritonforge gateway` has printed its banner (and, for `serve --gateway`, after Triton
has started). Binding first makes both a one-line ServerError before anything is printed or started.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Any

from tritonforge.errors import ServerError
from tritonforge.stop_signals import exit_code, not_ignored


def on_port(scope: Any, port: int | None) -> bool:
    """Whether an ASGI request arrived on the listener of ``port`` (its ``server``: the local address)."""
    server = scope.get("server") or (None, None)
    return port is not None and server[1] == port


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn binds: SO_REUSEADDR, IPv6 for an address with a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as err:
        sock.close()
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ServerError(f"the gateway cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _server_class() -> Any:
    """uvicorn's Server, leaving ignored the stop signals this process was started ignoring. uvicorn's handlers
    replaced them: a gateway started as ``tritonforge gateway &`` from a script (no job control: SIGINT ignored)
    stopped on the Ctrl-C meant for the script, with exit code 0, where ``serve`` keeps them ignored
    (stop_signals.not_ignored)."""
    import uvicorn

    class KeepsIgnoredSignals(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            main = threading.current_thread() is threading.main_thread()  # handlers exist only there
            ignored = [s for s in (signal.SIGINT, signal.SIGTERM) if main and not not_ignored((s,))]
            with super().capture_signals():
                for signum in ignored:
                    signal.signal(signum, signal.SIG_IGN)
                yield

    return KeepsIgnoredSignals


class GatewayServer:
    """uvicorn serving ``app`` on a socket from :func:`bind`: in this thread (:meth:`run`) or in a background one
    (:meth:`start` / :meth:`stop`, signals staying with the main thread)."""

    def __init__(self, app: Any, sock: socket.socket, grace: float = 15.0,
                 more: tuple[socket.socket, ...] = (), keep_alive: float | None = None) -> None:
        import uvicorn

        # stopping: new connections are refused, requests in flight get ``grace`` seconds to finish, then uvicorn
        # cancels them (a stream's close sends its engine the stop) and still runs the app's shutdown (which waits
        # for those stop signals); force_exit, the fallback below, skipped both
        from tritonforge.gateway.connection_guard import GuardedProtocol

        # headers bounded in size and time (connection_guard.py: uvicorn bounds neither)
        config = uvicorn.Config(app, log_level="warning", lifespan="on", http=GuardedProtocol,
                                timeout_graceful_shutdown=grace)  # type: ignore[arg-type]  # asyncio.wait's: any float
        # keep_alive: how long an idle client connection stays open (after a response, or before its first request);
        # None: uvicorn's 5 s. Longer behind a load balancer that keeps its own longer (an ALB reusing a connection
        # uvicorn just closed is a 502); each connection's protocol reads it when made
        if keep_alive is not None:
            config.timeout_keep_alive = keep_alive  # type: ignore[assignment]  # call_later's: any float
        self.server = _server_class()(config)
        self.hung_up = False
        self.grace = grace
        self.sock, self.more = sock, more  # more: listeners of the same app (the metrics one)
        self.thread = threading.Thread(target=self.run, name="tritonforge-gateway", daemon=True)

    def run(self) -> None:
        """Serve until a stop signal: uvicorn's SIGINT/SIGTERM, and SIGHUP (the terminal closed), which uvicorn
        leaves at its default: the gateway died at once, without its drain, and its streams' engines got no stop.
        After a SIGHUP it exits with 129, as `serve` does (unless started ignoring it: `nohup`)."""
        hangup = threading.current_thread() is threading.main_thread() and bool(not_ignored((signal.SIGHUP,)))
        previous = signal.signal(signal.SIGHUP, self._hang_up) if hangup else None
        try:
            self.server.run(sockets=[self.sock, *self.more])
        finally:
            for sock in (self.sock, *self.more):
                sock.close()
            if hangup:
                signal.signal(signal.SIGHUP, previous)
        if self.hung_up:
            raise SystemExit(exit_code(signal.SIGHUP))

    def _hang_up(self, _signum: int, _frame: object) -> None:
        # attributes only (a handler must take no lock the interrupted thread may hold), as uvicorn's own handler
        if self.hung_up:  # a second one: no more drain
            self.server.force_exit = True
        self.hung_up = True
        self.server.should_exit = True

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise ServerError("the gateway exited while starting (its log above says why)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the gateway did not start within {timeout:.0f}s")
            time.sleep(0.05)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float | None = None) -> None:
        """Stop as described in ``__init__``: at most ``grace`` seconds for the requests in flight, then ``timeout``
        (default 10 s) for the cancelled ones and the app's shutdown, then force."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(self.grace + (10.0 if timeout is None else timeout))
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(5)
