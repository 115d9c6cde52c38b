"""How a release reaches a running Triton: the model-control call (:class:`TritonControl`), what a failed load
means in words, and the stop signals held while Triton loads (kept out of releases.py, which handles the files).

A promote rewrites ``config.pbtxt`` and records the event before Triton is asked to load; a command ended while
Triton loads left that config naming a version that may then fail to load, which the next start of the repository
cannot get past. So SIGINT, SIGTERM and SIGHUP are held from the config rewrite until the load has finished and,
when it failed, the previous config is back: only then does the command end as the signal asked.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from tritonforge.errors import (
    ClientError,
    DeadlineExceededError,
    PermissionDeniedError,
    ReleaseError,
    TransientError,
    TritonForgeError,
)
from tritonforge.stop_signals import not_ignored
from tritonforge.triton.blocking_http import UNREADABLE_RESPONSE
from tritonforge.triton.connection import Connection
from tritonforge.triton.options import split_url
from tritonforge.values import is_real


class NoHttpAnswer(ReleaseError):
    """The address given as Triton's HTTP endpoint answered in something else (its gRPC port, typically)."""


class ModelControl(Protocol):
    """What a release needs from a running Triton: (re)load one model, raising with Triton's reason on failure.

    :class:`tritonforge.server.TritonServer` is one; :class:`TritonControl` reaches any Triton over HTTP or gRPC."""

    def load(self, model: str) -> None: ...


class TritonControl:
    """Triton's repository API, with the admin key header when the server wants one.

    ``url`` is Triton's HTTP endpoint, ``host:port`` or ``http(s)://host:port``, or its gRPC endpoint as
    ``grpc(s)://host:port`` (both answer the same load call; a bare ``host:port`` is HTTP, as it always was)."""

    def __init__(self, url: str, *, admin_key: str | None = None, timeout: float = 300.0) -> None:
        if not isinstance(url, str):
            raise ReleaseError(f"Triton address must be 'host:port' (a str), got {type(url).__name__}")
        if not is_real(timeout) or not timeout > 0:
            raise ReleaseError(f"Triton timeout must be a number of seconds > 0, got {timeout!r}")
        if admin_key is not None and not isinstance(admin_key, str):
            raise ReleaseError(f"admin_key must be a str (or None), got {type(admin_key).__name__}")
        self.url = url.strip().removeprefix("http://")
        # the scheme decides the transport: grpc:// used to be sent HTTP requests, which a gRPC port never answers
        self.protocol: Literal["grpc", "http"] = (
            "grpc" if self.url.lower().startswith(("grpc://", "grpcs://")) else "http"
        )
        try:  # a bad address is refused here, before a promote rewrites any config.pbtxt
            split_url(self.url, self.protocol)
        except ClientError as err:
            raise ReleaseError(
                f"Triton address {url!r} cannot be used: {err} (HTTP: host:port or http(s)://host:port; "
                "gRPC: grpc(s)://host:port)"
            ) from None
        self.admin_key = admin_key
        self.timeout = float(timeout)  # numpy's too: a plain float reaches the client

    def load(self, model: str) -> None:
        """Raises ReleaseError; its ``__cause__`` is the client's classified error (unreachable, key refused...),
        which is how :func:`_apply` tells a server problem from a version that failed to load."""
        with Connection(self.url, self.protocol, timeout=self.timeout, retries=0, admin_key=self.admin_key) as triton:
            try:
                triton.load_model(model)
                ready = triton.is_model_ready(model)
            except TransientError as err:
                raise ReleaseError(
                    f"Triton at {self.url} is unreachable, so '{model}' could not be loaded: {_reason(err)}"
                ) from err
            except PermissionDeniedError as err:
                raise ReleaseError(
                    f"Triton at {self.url} could not load '{model}': the admin key is missing or wrong (pass the "
                    f"key `tritonforge serve` printed: --admin-key or TRITONFORGE_ADMIN_KEY): {_reason(err)}"
                ) from err
            except ClientError as err:
                cause = err.__cause__
                if isinstance(cause, ConnectionError) and str(cause).startswith(UNREADABLE_RESPONSE):
                    address = self.url.split("://")[-1]
                    raise NoHttpAnswer(
                        f"nothing answered HTTP at {self.url} (what is listening there does not speak HTTP/1.1), so "
                        f"'{model}' was not loaded: if it is Triton's gRPC port, give it as grpc://{address} "
                        "(a bare host:port is Triton's HTTP port)"
                    ) from err
                raise ReleaseError(f"Triton at {self.url} could not load '{model}': {_reason(err)}") from err
        if not ready:
            raise ReleaseError(f"Triton at {self.url} loaded '{model}' but it is not ready")

    def server_ready(self) -> bool | None:
        """Whether Triton reports itself ready (/v2/health/ready); None when it does not answer."""
        timeout = min(self.timeout, 10.0)
        with Connection(self.url, self.protocol, timeout=timeout, retries=0, admin_key=self.admin_key) as triton:
            try:
                return triton.is_ready() if triton.is_live() else None
            except ClientError:
                return None


def _reason(err: ClientError) -> str:
    return getattr(err, "reason", "") or str(err)


def load_failure(
    model: str, version: int, before: Sequence[int], err: TritonForgeError, ready: bool | None = None
) -> str:
    """What a failed load means, by the client's error class (TritonControl chains it as the cause): a server that
    cannot be reached or refuses the key says nothing about the version, so the message must not blame it. ``ready``:
    whether Triton reports itself ready once the old config is back (None: not known)."""
    cause = err.__cause__ if isinstance(err.__cause__, ClientError) else err
    served = ", ".join(map(str, before)) or "none"
    if isinstance(err, NoHttpAnswer):  # a wrong address: "failed to load" blamed a version nothing had loaded
        return f"version {version} of {model} was not promoted: {err} (config.pbtxt restored: version {served})"
    if isinstance(cause, TransientError):
        return (
            f"version {version} of {model} was not promoted: the Triton server could not be reached, so nothing was "
            f"loaded (config.pbtxt restored: it names version {served} again): {err}"
        )
    if isinstance(cause, PermissionDeniedError):
        return (
            f"version {version} of {model} was not promoted: Triton refused the model-control call, so nothing "
            f"was loaded (version {served} still serves; config.pbtxt restored): {err}"
        )
    if isinstance(cause, DeadlineExceededError):
        return (
            f"version {version} of {model} was not promoted: Triton did not answer the load in time (config.pbtxt "
            f"restored to version {served}; check the server, which may still be loading): {err}"
        )
    return (
        f"version {version} of {model} failed to load, so it was not promoted (version {served} still "
        f"serves; config.pbtxt restored): {err}{_not_ready_note(model, served, ready)}"
    )


def _not_ready_note(model: str, served: str, ready: bool | None) -> str:
    """What a failed version does to Triton's own readiness. Measured on Triton 2.51: with strict readiness the
    failed version's UNAVAILABLE entry makes /v2/health/ready answer 400 while the old version serves, and nothing
    short of unloading the model (which stops it serving) or a restart clears it: not a reload of the restored
    config, nor one with a config override, a changed config or another version set."""
    if ready is True:  # --strict-readiness=false: the server's readiness ignores the failed version
        return ""
    who = "Triton now reports" if ready is False else (
        "a Triton run with --strict-readiness=true (as `tritonforge serve` and `tritonforge deploy k8s` run it) now "
        "reports"
    )
    return (
        f". {who} itself not ready on /v2/health/ready until tritonserver restarts (it keeps the failed version's "
        f"entry; no reload clears it without unloading {model}): readiness probes on /v2/health/ready, as "
        f"`tritonforge deploy k8s` writes them, take the pod out of service although version {served} serves. "
        "Restart it when convenient: it loads the restored config"
    )


def version_failed(err: TritonForgeError) -> bool:
    """Whether a failed load is the version's fault (Triton answered), not an unreachable or refusing server."""
    cause = err.__cause__ if isinstance(err.__cause__, ClientError) else err
    return not isinstance(err, NoHttpAnswer) and not isinstance(
        cause, TransientError | PermissionDeniedError | DeadlineExceededError
    )


def server_ready(control: object) -> bool | None:
    """Whether the Triton behind ``control`` reports itself ready; None when the control cannot tell (it has no
    ``server_ready()``, as :class:`tritonforge.server.TritonServer`) or the server does not answer."""
    probe = getattr(control, "server_ready", None)
    if not callable(probe):
        return None
    try:
        ready = probe()
    except TritonForgeError:
        return None
    return ready if isinstance(ready, bool) else None


class HeldSignals:
    """Within ``with``: a stop signal (SIGINT, SIGTERM, SIGHUP, each unless the process was started ignoring it) is
    recorded in :attr:`caught` instead of acting; the handlers before are back on leaving, and the caller decides
    what the signal ends. A second signal is held too: the files and Triton must agree before the process ends
    (SIGKILL still ends it, as it ends anything). Outside the main thread (where Python sets no handlers) it holds
    nothing."""

    def __init__(self) -> None:
        self.caught: list[int] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> HeldSignals:
        if threading.current_thread() is threading.main_thread():
            # None: a handler set outside Python, which signal.signal could not put back
            self._previous = {s: h for s in not_ignored() if (h := signal.getsignal(s)) is not None}
            for signum in self._previous:
                signal.signal(signum, self._hold)
        return self

    def _hold(self, signum: int, _frame: object) -> None:
        self.caught.append(signum)  # only this: a handler runs between two bytecodes of whatever the thread does

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    @property
    def first(self) -> int | None:
        return self.caught[0] if self.caught else None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
