"""Where the ``nvidia-pytriton`` wheel put ``tritonserver``, and what the launcher prepares for that binary: a backend
directory (symlinks to the python backend and the stub for the running interpreter's Python version, cached) and the
environment (this interpreter's LIBDIR first on ``LD_LIBRARY_PATH``, its ``bin`` first on ``PATH``); see
:mod:`tritonforge.server`."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tritonforge.errors import ServerError

LOG = logging.getLogger("tritonforge.server")
_STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class _Wheel:
    """Where nvidia-pytriton put the server, its libraries, backends and stubs."""

    root: Path  # <site-packages>/pytriton/tritonserver

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def libs(self) -> Path:
        # a wheel install keeps auditwheel's libraries next to the package; an editable one under external_libs
        beside = self.root.parent.parent / "nvidia_pytriton.libs"
        return beside if beside.is_dir() else self.root / "external_libs"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def stubs(self) -> Path:
        return self.root / "python_backend_stubs"

    @property
    def caches(self) -> Path:
        return self.root / "caches"


def wheel_layout() -> _Wheel:
    missing = ServerError(
        "tritonserver not found: the nvidia-pytriton package that ships it is not installed in "
        f"{sys.prefix}. Install it with: pip install \"tritonforge[cpu]\" (or pass tritonserver=<path to a binary>)"
    )
    try:
        spec = importlib.util.find_spec("pytriton")  # does not import pytriton (its import is slow)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise missing
    wheel = _Wheel(Path(next(iter(spec.submodule_search_locations))) / "tritonserver")
    if not wheel.binary.is_file():
        raise ServerError(f"{missing} [looked for {wheel.binary}]")
    return wheel


def find_tritonserver() -> Path:
    """The ``tritonserver`` binary shipped by the nvidia-pytriton wheel, or a ServerError saying how to get it."""
    binary = wheel_layout().binary
    if not os.access(binary, os.X_OK):
        raise ServerError(f"{binary} is not executable (chmod +x it, or reinstall nvidia-pytriton)")
    return binary


def _cache_root() -> Path:
    root = os.environ.get("TRITONFORGE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "tritonforge"


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def prepare_backend_directory(cache: Path | None = None) -> Path:
    """A ``--backend-directory`` whose python backend uses the stub built for the running Python version.

    Triton runs ``<backend-directory>/python/triton_python_backend_stub``; the wheel keeps one stub per Python
    version elsewhere. The directory holds symlinks only, is keyed by version and source paths, and is created
    atomically (concurrent launchers share it).
    """
    wheel = wheel_layout()
    version = _python_version()
    stub = wheel.stubs / version / _STUB
    if not stub.is_file():
        have = sorted(p.name for p in wheel.stubs.iterdir()) if wheel.stubs.is_dir() else []
        raise ServerError(
            f"nvidia-pytriton has no python backend stub for Python {version} (has: {', '.join(have) or 'none'}); "
            "run tritonforge with one of those Python versions"
        )
    lib = wheel.python_backend / "libtriton_python.so"
    utils = wheel.python_backend / "triton_python_backend_utils.py"
    for need in (lib, utils):
        if not need.is_file():
            raise ServerError(f"the nvidia-pytriton install is incomplete: {need} is missing (reinstall it)")

    links: dict[str, Path] = {f"python/{p.name}": p.resolve() for p in (lib, utils, stub)}
    backends = wheel.root / "backends"
    for other in sorted(backends.iterdir()) if backends.is_dir() else []:
        if other.is_dir() and other.name != "python":  # any further backend the wheel may ship, as is
            links[other.name] = other.resolve()
    fingerprint = "\n".join(f"{k}={v}:{v.stat().st_mtime_ns}" for k, v in sorted(links.items()))
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]

    base = (cache or _cache_root()) / "backends"
    target = base / f"{version}-{key}"
    if all((target / name).exists() for name in links):
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-{key}.", dir=base))
    except OSError as err:
        raise ServerError(f"cannot create the backend directory under {base}: {err} (set TRITONFORGE_CACHE)") from None
    try:
        (tmp / "python").mkdir()
        for name, source in links.items():
            (tmp / name).symlink_to(source)
        try:
            os.rename(tmp, target)
        except OSError:  # someone else won the race (or a stale, broken copy is there): replace it
            if not all((target / name).exists() for name in links):
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def wheel_environment(wheel: _Wheel, env: dict[str, str]) -> dict[str, str]:
    """LD_LIBRARY_PATH and PATH so that the server and the python stub run in this interpreter's environment."""

    def prepend(var: str, *dirs: str | Path | None) -> None:
        parts = [str(d) for d in dirs if d] + env.get(var, "").split(os.pathsep)
        env[var] = os.pathsep.join(dict.fromkeys(p for p in parts if p))  # first occurrence wins

    if not (Path(sys.executable).parent / "python3").exists():
        LOG.warning(
            "%s has no python3: python models may not run in this environment", Path(sys.executable).parent
        )
    libdir = sysconfig.get_config_var("LIBDIR")
    prepend("LD_LIBRARY_PATH", libdir if libdir and Path(libdir).is_dir() else None, wheel.libs)
    # the stub's isolated interpreter locates its prefix from the `python3` on PATH: make that this interpreter
    prepend("PATH", Path(sys.executable).parent, Path(sys.prefix) / "bin")
    return env


def has_gpu() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()
