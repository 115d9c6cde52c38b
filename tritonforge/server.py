"""Run an embedded ``tritonserver`` on a model repository.

    from tritonforge.server import serve

    with serve("model_repository") as server:      # waits until every model is READY
        print(server.endpoints.grpc)                 # 127.0.0.1:<free port>

The binary normally comes from the ``nvidia-pytriton`` wheel (``pip install "tritonforge[cpu]"``). For that binary
the launcher prepares what the wheel leaves to its own runtime:

* a backend directory (cached under ``$TRITONFORGE_CACHE`` or ``~/.cache/tritonforge``) holding symlinks to the
  python backend and to the stub built for the *running* interpreter's Python version;
* ``LD_LIBRARY_PATH`` = this interpreter's ``LIBDIR`` first (the stub embeds CPython through ``libpython3.X.so``; the
  system's copy may be older than this interpreter's extension modules: ``undefined symbol: _PyModule_Add`` from
  ``_ssl``), then the wheel's ``nvidia_pytriton.libs``;
* ``PATH`` = this interpreter's ``bin`` first. The stub's interpreter runs *isolated* (``PYTHONPATH`` is ignored)
  and finds its prefix through the ``python3`` it sees on ``PATH``; from the venv's ``bin`` it picks up the venv's
  ``pyvenv.cfg`` and so its site-packages, and python models can import what the launcher's venv has.

The server runs with explicit model control and strict configs (``--disable-auto-complete-config``), bound to
loopback by default, in its own process group, with its output captured to a log file so that a failure names the
model that did not load and why.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonforge.errors import ClientError, ServerError
from tritonforge.server_process import (
    PORT_IN_USE,
    abandon,
    deferred_signals,
    exit_text,
    log_excerpt,
    pdeathsig,
    reason_from_log,
    short_reason,
    startup_causes,
    still_loading,
    terminate_group,
)
from tritonforge.server_wheel import (
    find_tritonserver,
    has_gpu,
    prepare_backend_directory,
    wheel_environment,
    wheel_layout,
)
from tritonforge.stub_watchdog import StubWatchdog, compile_python_models
from tritonforge.triton.connection import Connection
from tritonforge.triton.options import ADMIN_HEADER, GRPC_ADMIN_HEADER, restricted_api_args
from tritonforge.values import is_real, is_whole

__all__ = [
    "ADMIN_HEADER",
    "GRPC_ADMIN_HEADER",
    "Endpoints",
    "TritonServer",
    "find_tritonserver",
    "free_port",
    "is_object_store_url",
    "prepare_backend_directory",
    "serve",
]

LOG = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it from a bound socket)."""
    return _free_ports(1, host)[0]


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    # Hold every socket until all are picked, so the ports are distinct.
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    except OSError as err:  # an address that is not this host's, or not an address at all
        raise ServerError(f"cannot bind {host!r}: {err.strerror or err}; give an address of this host") from None
    finally:
        for s in socks:
            s.close()


def _taken_ports(host: str, ports: dict[str, int]) -> list[str]:
    """"name port: why" for each given port this host cannot bind now (in use, or privileged): checked before
    Triton starts, because Triton reports a port it cannot bind only after loading every model (minutes for an LLM),
    and a metrics port only after serve had printed "ready"."""
    bind_host = "0.0.0.0" if host in ("", "0.0.0.0") else ("::" if host == "::" else host)
    taken = []
    for name, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in bind_host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds: TIME_WAIT does not count
            try:
                s.bind((bind_host, port))
            except OSError as err:
                taken.append(f"{name} {port}: {err.strerror or err}")
    return taken


# ------------------------------------------------------------------------------------------------------ endpoints


@dataclass(frozen=True)
class Endpoints:
    """Where a running server answers, as ``host:port`` (what tritonclient expects)."""

    http: str
    grpc: str
    metrics: str

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics}/metrics"


def _connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host



_OBJECT_STORE = re.compile(r"^(s3|gs|as3)://", re.IGNORECASE)


def is_object_store_url(repo: str | Path) -> bool:
    """A repository Triton reads from an object store (``s3://[host:port/]bucket/prefix``, ``gs://``, ``as3://``)."""
    return isinstance(repo, str) and bool(_OBJECT_STORE.match(repo))


class _PortInUse(ServerError):
    pass


class TritonServer:
    """One ``tritonserver`` process serving a model repository.

    ``models=None`` loads every model of the repository; a failed load fails :meth:`start` (the message names the
    model and Triton's reason), unless ``allow_partial=True``: then the other models serve, the failures are in
    :attr:`failed_models`, and ``/v2/health/ready`` reports the server (``--strict-readiness=false``).

    ``exit_timeout`` bounds Triton's graceful shutdown (``--exit-timeout-secs``: the wait for open HTTP connections,
    then for in-flight requests); :meth:`stop` kills the process group if that was not enough.

    ``tritonserver`` may name another binary; its environment and backend directory are then left alone (pass
    ``backend_directory``/``env`` to set them). ``backend_config`` maps ``"<backend>,<setting>"`` (or a global
    ``"<setting>"``) to a value, as ``--backend-config``. ``cache_size_bytes`` enables the local response cache
    (models opt in with ``response_cache { enable: true }``).

    ``repo`` may also be an object-store URL (``s3://[host:port/]bucket/prefix``, ``gs://...``): it is passed to
    ``--model-repository`` as is, and Triton reads the credentials from the environment (``AWS_ACCESS_KEY_ID``, ...).

    Triton's model control (load/unload), shared-memory, logging and trace APIs answer only requests carrying
    :attr:`admin_key` (``admin_key``, else one generated), as `tritonforge serve` does; ``open_admin=True`` leaves
    them open to whoever reaches the ports. A server started from Python left them open: any client could unload
    every model (API audit).
    """

    def __init__(
        self,
        repo: str | Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        tritonserver: str | Path | None = None,
        host: str = "127.0.0.1",
        models: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        log_file: str | Path | None = None,
        startup_timeout: float = 120.0,
        backend_config: Mapping[str, str] | None = None,
        cache_size_bytes: int | None = None,
        allow_partial: bool = False,
        backend_directory: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log_verbose: int = 0,
        exit_timeout: float = 5.0,
        admin_key: str | None = None,
        heal_stubs: bool = True,
        open_admin: bool = False,
    ) -> None:
        if admin_key is not None and open_admin:
            raise ServerError("give admin_key or open_admin=True, not both: the key would be dropped and the admin "
                              "APIs left open")
        _check_arguments(
            repo, models=models, extra_args=extra_args, env=env, backend_config=backend_config, host=host,
            ports={"http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port},
            numbers={"startup_timeout": (startup_timeout, 0, False), "exit_timeout": (exit_timeout, 0, True),
                     "log_verbose": (log_verbose, 0, True), "cache_size_bytes": (cache_size_bytes, 0, True)},
        )
        # an object-store URL (s3://, gs://, as3://) goes to --model-repository as is; Triton reads it itself
        self.repo: Path | str = str(repo) if is_object_store_url(repo) else Path(repo).expanduser().resolve()
        self.host = host
        self.models = None if models is None else tuple(models)
        self.extra_args = tuple(str(a) for a in extra_args)
        self.startup_timeout = float(startup_timeout)
        self.backend_config = dict(backend_config or {})
        self.cache_size_bytes = None if cache_size_bytes is None else int(cache_size_bytes)
        self.allow_partial = allow_partial
        self.log_verbose = int(log_verbose)
        self.exit_timeout = float(exit_timeout)
        # With a key, Triton refuses model loading/unloading and shared-memory registration over HTTP and gRPC
        # unless the request carries the `tritonforge-admin-key` header (Triton's restricted-API feature).
        self.admin_key = None if open_admin else (admin_key or secrets.token_urlsafe(24))
        self._ports = tuple(None if p is None else int(p) for p in (http_port, grpc_port, metrics_port))
        self._binary = Path(tritonserver).expanduser() if tritonserver else None
        self._backend_directory = Path(backend_directory).expanduser() if backend_directory else None
        self._env = dict(env or {})
        self._log_file = Path(log_file).expanduser() if log_file else None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._log_cache = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._endpoints: Endpoints | None = None
        self._lock = threading.RLock()
        self.failed_models: dict[str, str] = {}
        self.startup_seconds: float | None = None
        # a python-backend stub that dies is not restarted by Triton 2.51: the launcher reloads its model
        self.watchdog: StubWatchdog | None = None
        if heal_stubs:
            self.watchdog = StubWatchdog(
                pid=lambda: self.pid if self.is_running() else None,
                ready=self._listed_ready,
                reload=self.heal,
            )

    # ---------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Endpoints:
        """Launch the server and wait until it and every requested model are ready; returns the endpoints."""
        with self._lock:
            if self.is_running():
                raise ServerError(f"this server is already running (pid {self.pid})")
            if isinstance(self.repo, Path) and not self.repo.is_dir():
                raise ServerError(f"model repository {self.repo} is not a directory")
            given = {n: p for n, p in zip(("http_port", "grpc_port", "metrics_port"), self._ports, strict=True)
                     if p is not None}
            if taken := _taken_ports(self.host, given):
                raise ServerError(f"cannot serve on {self.host}: " + "; ".join(taken))
            binary, env, wheel_args = self._resolve()
            if self._binary is None and isinstance(self.repo, Path):
                compile_python_models(self.repo)  # the bundled server's stubs run this interpreter
            auto_ports = any(p is None for p in self._ports)
            attempts = 3 if auto_ports else 1
            for attempt in range(1, attempts + 1):
                try:
                    return self._launch(binary, env, wheel_args)
                except _PortInUse:
                    # a port picked as free was taken before tritonserver bound it: pick again
                    if attempt == attempts:
                        raise
                    LOG.info("a port was taken before tritonserver bound it; retrying with new ports")
            raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL (the whole process group, stubs included) after ``timeout`` s. Idempotent."""
        if self.watchdog is not None:
            self.watchdog.stop()
        with self._lock:
            proc, self._proc = self._proc, None
            try:  # an interrupt while it drains (Ctrl-C again) kills it at once (terminate_group) and lands here
                if proc is not None:
                    if self._finalizer is not None:
                        self._finalizer.detach()
                        self._finalizer = None
                    terminate_group(proc, timeout)
                    LOG.debug("tritonserver pid %d stopped with code %s", proc.pid, proc.returncode)
            finally:
                if proc is not None and self.watchdog is not None:
                    self.watchdog.remove_regions()  # stubs that died before the stop (a graceful exit removed the rest)
                self._endpoints = None
                if self._log_path is not None:
                    self._log_cache = self._read_log()
                if self._tmpdir is not None:  # the log's folder: it was left behind by a Ctrl-C during the stop
                    shutil.rmtree(self._tmpdir, ignore_errors=True)
                    self._tmpdir = None
                    self._log_path = None

    def __enter__(self) -> TritonServer:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid} {self._endpoints}" if self.is_running() else "stopped"
        return f"TritonServer({str(self.repo)!r}, {state})"

    # -------------------------------------------------------------------------------------------------- state

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """How the started process ended (negative: the signal that killed it); None while it runs or unstarted."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def endpoints(self) -> Endpoints:
        if self._proc is not None and self._proc.poll() is not None:
            # started and not stopped, yet gone: say how it ended and what it printed, not "call start()"
            how = exit_text(self._proc.returncode)
            raise self._fail(f"tritonserver (pid {self._proc.pid}) exited unexpectedly: {how}")
        if self._endpoints is None or not self.is_running():
            raise ServerError("the server is not running: call start() (or use it as a context manager) first")
        return self._endpoints

    @property
    def http_url(self) -> str:
        return self.endpoints.http_url

    @property
    def grpc_url(self) -> str:
        return self.endpoints.grpc_url

    @property
    def metrics_url(self) -> str:
        return self.endpoints.metrics_url

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def log_text(self) -> str:
        """Everything the server printed (kept after stop())."""
        return self._read_log() if self._log_path is not None else self._log_cache

    def model_states(self) -> list[dict[str, Any]]:
        """The repository index: ``[{"name", "version", "state", "reason"}...]`` (keys as Triton gives them)."""
        return self._index(self.endpoints.http)

    # ------------------------------------------------------------------------------------------ repository API

    def load(self, model: str, *, timeout: float = 120.0, restart: bool = False) -> None:
        """Load a model through the repository API; a ServerError carries Triton's reason.

        Triton reloads a loaded model only when its files changed; ``restart=True`` unloads it first, which is
        what brings back a model whose python-backend stub died (Triton 2.51 does not restart stubs by itself).
        """
        if restart:
            self.unload(model, wait=True, timeout=timeout)
        with self._connection(timeout) as triton:
            try:
                triton.load_model(model)
            except ClientError as err:
                reason = short_reason(_reason(err))
                raise ServerError(f"tritonserver could not load model '{model}': {reason}") from None
        if not self._model_ready(model):
            raise ServerError(f"model '{model}' was loaded but is not ready")

    def heal(self, model: str, *, timeout: float = 120.0) -> list[str]:
        """Bring back a model whose python stub died, with readiness telling the truth meanwhile: Triton keeps an
        ensemble READY while a member cannot serve, so the ensembles that use ``model`` (directly or through other
        ensembles) are unloaded first, the model is reloaded, and they are loaded again, innermost first. Returns
        those ensembles."""
        dependents = self._ensembles_using(model)
        for name in reversed(dependents):  # outermost first: an ensemble cannot stay loaded without its members
            self.unload(name, wait=True, timeout=timeout)
        try:
            self.load(model, timeout=timeout, restart=True)
        finally:
            for name in dependents:
                self.load(name, timeout=timeout)
        return dependents

    def _ensembles_using(self, model: str) -> list[str]:
        """The loaded ensembles that run ``model``, transitively, innermost first."""
        steps: dict[str, set[str]] = {}
        with self._connection(10.0) as triton:
            for entry in self.model_states():
                name = str(entry.get("name"))
                if entry.get("state") != "READY" or name in steps:
                    continue
                try:
                    config = triton.model_config(name)
                except ClientError:
                    continue
                members = config.get("ensemble_scheduling", {}).get("step", [])
                steps[name] = {str(s.get("model_name")) for s in members}
        ordered: list[str] = []
        reached = {model}
        changed = True
        while changed:  # breadth by depth: an ensemble joins once one of its steps is reached
            changed = False
            for name, members in steps.items():
                if name not in reached and members & reached:
                    reached.add(name)
                    ordered.append(name)
                    changed = True
        return ordered

    def unload(self, model: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Unload a model; with ``wait`` return once it no longer serves."""
        with self._connection(timeout) as triton:
            try:
                triton.unload_model(model)
            except ClientError as err:
                raise ServerError(f"tritonserver could not unload model '{model}': {_reason(err)}") from None
        deadline = time.monotonic() + timeout
        while wait and self._model_ready(model):
            if time.monotonic() > deadline:
                raise ServerError(f"model '{model}' still serves {timeout:.0f}s after unload")
            time.sleep(0.05)

    # ---------------------------------------------------------------------------------------------- internals

    def _connection(self, timeout: float, http: str | None = None) -> Connection:
        """A connection to this server's HTTP endpoint with the admin key; not retried."""
        return Connection(http or self.endpoints.http, "http", timeout=timeout, retries=0, admin_key=self.admin_key)

    def _listed_ready(self, model: str) -> bool | None:
        """Whether Triton's repository index lists ``model`` as READY (also while its stub is dead); None when the
        index could not be read (the watchdog asks again rather than take the model for unloaded)."""
        try:
            return any(m.get("name") == model and m.get("state") == "READY" for m in self._index(self.endpoints.http))
        except ServerError as err:
            LOG.debug("repository index: %s", err)
            return None

    def _model_ready(self, model: str) -> bool:
        with self._connection(5.0) as triton:
            try:
                return triton.is_model_ready(model)
            except ClientError:
                return False

    def _resolve(self) -> tuple[Path, dict[str, str], list[str]]:
        env = dict(os.environ)
        args: list[str] = []
        if self._binary is None:
            wheel = wheel_layout()
            binary = find_tritonserver()
            wheel_environment(wheel, env)
            backend_dir = self._backend_directory or prepare_backend_directory()
            args.append(f"--backend-directory={backend_dir}")
            if wheel.caches.is_dir():
                args.append(f"--cache-directory={wheel.caches}")
        else:
            binary = self._binary
            if not binary.is_file() or not os.access(binary, os.X_OK):
                raise ServerError(f"tritonserver={binary} is not an executable file")
            if self._backend_directory is not None:
                args.append(f"--backend-directory={self._backend_directory}")
        env.update(self._env)
        return binary, env, args

    def _arguments(self, binary: Path, wheel_args: list[str], ports: Sequence[int]) -> list[str]:
        http, grpc, metrics = ports
        args = [
            str(binary),
            f"--model-repository={self.repo}",
            "--model-control-mode=explicit",
            *(["--load-model=*"] if self.models is None else [f"--load-model={m}" for m in self.models]),
            "--disable-auto-complete-config",
            # failures are judged here (with the index's reasons), not by Triton exiting on the first one
            "--exit-on-error=false",
            f"--strict-readiness={'false' if self.allow_partial else 'true'}",
            f"--log-verbose={self.log_verbose}",
            # on SIGTERM Triton waits this long for open HTTP connections (idle keep-alive ones too), then as long
            # again for in-flight requests; its default of 30 s made every stop() with a client around take 30 s
            f"--exit-timeout-secs={max(0, round(self.exit_timeout))}",
            f"--http-address={self.host}",
            f"--http-port={http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={metrics}",
            *wheel_args,
        ]
        if not has_gpu():
            args.append("--allow-gpu-metrics=false")  # no NVML/DCGM noise on CPU-only hosts
        if self.cache_size_bytes is not None:
            args.append(f"--cache-config=local,size={int(self.cache_size_bytes)}")
        for key, value in self.backend_config.items():
            args.append(f"--backend-config={key}={value}")
        if self.admin_key:
            args += restricted_api_args(self.admin_key)
        args.extend(self.extra_args)  # last: they override the defaults above
        return args

    def _open_log(self) -> Any:
        if self._log_file is not None:
            try:
                self._log_file.parent.mkdir(parents=True, exist_ok=True)
                handle = open(self._log_file, "wb")  # noqa: SIM115 - handed to the child, closed right after Popen
            except OSError as err:
                raise ServerError(f"log_file={self._log_file}: cannot be written: {err.strerror or err}") from None
            self._log_path = self._log_file
            return handle
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="tritonforge-server-"))
        self._log_path = self._tmpdir / "tritonserver.log"
        return open(self._log_path, "wb")  # handed to the child, closed right after Popen

    def _read_log(self) -> str:
        assert self._log_path is not None
        try:
            return self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return self._log_cache

    def _launch(self, binary: Path, env: dict[str, str], wheel_args: list[str]) -> Endpoints:
        picked = iter(_free_ports(3, self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"))
        ports = [p if p is not None else next(picked) for p in self._ports]
        args = self._arguments(binary, wheel_args, ports)
        connect = _connect_host(self.host)
        endpoints = Endpoints(*(f"{connect}:{p}" for p in ports))
        LOG.debug("starting %s", " ".join(args))
        began = time.monotonic()
        log = self._open_log()
        try:
            # a SIGINT/SIGTERM handler that raises (the CLI's) must not fire inside Popen: raised in a fork hook it
            # was swallowed ("Exception ignored") and the server started anyway, or it left the child unknown to
            # stop(). It is held until the child is ours, then raised here, where stop() reaches it.
            with deferred_signals():
                try:
                    self._proc = subprocess.Popen(
                        args,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=str(self.repo) if isinstance(self.repo, Path) else None,
                        start_new_session=True,  # own process group: stop() can reach the python stubs too
                        preexec_fn=pdeathsig(),
                    )
                except OSError as err:
                    raise ServerError(f"cannot run {binary}: {err}") from None
                finally:
                    log.close()
                self._finalizer = weakref.finalize(self, abandon, self._proc, self._tmpdir)
                self._endpoints = endpoints
            self._wait_ready(endpoints, began)
        except BaseException:
            self.stop(timeout=10.0)
            raise
        self.startup_seconds = time.monotonic() - began
        LOG.info("tritonserver ready in %.1fs at %s (pid %d)", self.startup_seconds, endpoints, self.pid)
        if self.watchdog is not None:
            self.watchdog.start()
        return endpoints

    def _fail(self, headline: str, causes: Sequence[str] = ()) -> ServerError:
        """``causes`` (what the log says went wrong) lead, then ``headline``, then the log's excerpt."""
        text = self._read_log()
        where = f" ({self._log_file})" if self._log_file else ""
        excerpt = log_excerpt(text, gpu_host=has_gpu())
        return ServerError("\n".join([*causes, headline]) + f"\n--- tritonserver log{where} ---\n{excerpt}")

    def _index(self, http: str) -> list[dict[str, Any]]:
        with self._connection(10.0, http) as triton:
            try:
                return triton.repository_index()
            except ClientError as err:
                raise ServerError(f"cannot read the repository index from {http}: {_reason(err)}") from None

    def _health(self, http: str, what: str) -> bool:
        """Live or ready; False while the endpoint does not answer."""
        with self._connection(2.0, http) as triton:
            try:
                return triton.is_live() if what == "live" else triton.is_ready()
            except ClientError:
                return False

    def _wait_ready(self, endpoints: Endpoints, began: float) -> None:
        assert self._proc is not None
        deadline = began + self.startup_timeout
        delay = 0.05

        def pause(failed: dict[str, str] | None = None) -> None:
            """``failed``: the models the index reported as failed so far (the rest are still loading)."""
            nonlocal delay
            if self._proc is not None and self._proc.poll() is None and time.monotonic() > deadline:
                log = self._read_log()
                loading = still_loading(log)
                still = f" (still loading: {', '.join(loading)})" if loading else ""
                # the cause, when the log names one (a model that failed while another kept the start waiting),
                # comes first: the timeout is only how it showed
                raise self._fail(
                    f"tritonserver was not ready after {self.startup_timeout:.0f}s{still}", startup_causes(log, failed)
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

        # 1. live: Triton loads the startup models before it opens its endpoints
        while not self._health(endpoints.http, "live"):
            code = self._proc.poll()
            if code is not None:
                text = self._read_log()
                # what the log names (a model that failed to load, with --exit-on-error) leads, as on a timeout
                failure = self._fail(
                    f"tritonserver exited with code {code} before it was ready ({self.repo})", startup_causes(text)
                )
                if PORT_IN_USE.search(text) and any(p is None for p in self._ports):
                    raise _PortInUse(str(failure))
                raise failure
            pause()

        # 2. every wanted model READY (or, with allow_partial, settled)
        while True:
            try:
                index = self._index(endpoints.http)
            except ServerError as err:
                raise self._fail(str(err)) from None
            states = {m.get("name", ""): m for m in index}
            wanted = list(states) if self.models is None else list(self.models)
            failed: dict[str, str] = {}
            pending = []
            for name in wanted:
                entry = states.get(name)
                state = (entry or {}).get("state", "")
                if entry is None:
                    found = ", ".join(sorted(states)) or "none"
                    failed[name] = f"no such model in {self.repo} (models: {found})"
                elif state == "READY":
                    continue
                elif state in ("LOADING", "UNLOADING"):
                    pending.append(name)
                elif entry.get("reason"):
                    failed[name] = short_reason(entry["reason"])
                else:
                    failed[name] = reason_from_log(name, self._read_log())
            if not pending:
                break
            pause(failed)
        self.failed_models = failed
        if failed:
            lines = "\n".join(f"  {name}: {why}" for name, why in sorted(failed.items()))
            if not self.allow_partial:
                raise self._fail(f"tritonserver could not load {len(failed)} model(s) from {self.repo}:\n{lines}")
            LOG.warning("serving without %d model(s) that failed to load:\n%s", len(failed), lines)

        # 3. the server's own readiness
        while not self._health(endpoints.http, "ready"):
            if self._proc.poll() is not None:
                raise self._fail(f"tritonserver exited with code {self._proc.returncode} while getting ready")
            pause()


def _check_arguments(
    repo: object,
    *,
    models: object,
    extra_args: object,
    env: object,
    backend_config: object,
    host: object,
    ports: dict[str, object],
    numbers: dict[str, tuple[object, float, bool]],
) -> None:
    """The constructor's arguments, refused by name before anything runs (a string of extra_args was split into
    characters, port True was port 1, two endpoints on one port failed only when tritonserver bound them)."""
    if not isinstance(repo, (str, os.PathLike)) or not str(repo):
        raise ServerError(f"repo must be a model repository folder or an object-store URL, not {repo!r}")
    for name, names in (("models", models), ("extra_args", extra_args)):
        if names is None and name == "models":
            continue
        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
            raise ServerError(f"{name} must be a list of strings, not {names!r}")
        if not all(isinstance(item, str) for item in names):
            raise ServerError(f"{name} must be a list of strings, got {list(names)!r}")
    for name, mapping in (("env", env), ("backend_config", backend_config)):
        if mapping is not None and not (
            isinstance(mapping, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
        ):
            raise ServerError(f"{name} must be a mapping of strings to strings, not {mapping!r}")
    if not isinstance(host, str) or not host:
        raise ServerError(f"host must be an address of this host such as '127.0.0.1', not {host!r}")
    given: dict[object, str] = {}
    for name, port in ports.items():
        if port is None:
            continue
        if not is_whole(port) or not 0 < int(port) < 65536:
            raise ServerError(f"{name}={port!r} is not a TCP port (1..65535)")
        if port in given:
            raise ServerError(f"{name} and {given[port]} are both {port}: each endpoint needs a port of its own")
        given[port] = name
    for name, (value, least, inclusive) in numbers.items():
        if value is None and name == "cache_size_bytes":
            continue
        whole = name in ("log_verbose", "cache_size_bytes")
        ok = is_whole(value) if whole else is_real(value)
        if not ok or (value < least if inclusive else value <= least):  # type: ignore[operator]
            bound = f">= {least:g}" if inclusive else f"> {least:g}"
            raise ServerError(f"{name}={value!r} must be a {'whole ' if whole else ''}number {bound}")


def _reason(err: ClientError) -> str:
    """Triton's own words in a mapped error (see :func:`tritonforge.triton.errors.classify_error`)."""
    return str(getattr(err, "reason", "") or err)


def serve(repo: str | Path, **kwargs: Any) -> TritonServer:
    """Start a server on ``repo`` (keyword arguments as :class:`TritonServer`); use the result as a context manager."""
    server = TritonServer(repo, **kwargs)
    server.start()
    return server
