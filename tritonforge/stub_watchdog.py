"""Heal python-backend models whose stub process died.

Triton 2.51 does not restart a python-backend stub that died (killed, out of memory, a crash in native code): the
model stays READY in Triton's index and every request to it fails with "Stub process '<instance>' is not healthy",
until someone reloads the model. The launcher knows better than Triton here: each model instance is a child
process of tritonserver (``triton_python_backend_stub <model folder>/<version>/model.py ... <instance name>``), so
an instance whose stub vanished while Triton still lists the model as READY is dead, not unloaded.

``StubWatchdog`` scans the server's children once per ``interval``; an instance missing on two scans in a row
(a reload replaces stubs by name, so a brief gap is not a death) of a model Triton still calls READY gets the model
reloaded through the repository API (unload, then load: what brings a dead stub back), with a log line and a
per-model back-off that doubles after each failed reload (up to ``max_backoff``). Linux only (``/proc``).
"""

from __future__ import annotations

import compileall
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LOG = logging.getLogger("tritonforge.server")
STUB_BINARY = "triton_python_backend_stub"


def python_stubs(parent_pid: int, proc: Path = Path("/proc")) -> dict[str, str]:
    """{instance name: model name} of the python-backend stubs whose parent is ``parent_pid``."""
    return {instance: model for instance, (model, _region) in stub_processes(parent_pid, proc).items()}


def stub_processes(parent_pid: int, proc: Path = Path("/proc")) -> dict[str, tuple[str, str | None]]:
    """{instance name, e.g. "minilm_encoder_0_0": (model name, its shared-memory region's name in /dev/shm)} of
    the python-backend stubs whose parent is ``parent_pid``: one read of /proc gives the watchdog both."""
    return {
        args[8]: (Path(args[1]).parent.parent.name,  # <repository>/<model>/<version>/model.py
                  args[2] if args[2].startswith(SHM_PREFIX) else None)
        for args in _stub_args(parent_pid, proc)
    }


SHM_PREFIX = "triton_python_backend_shm_region"


def _stub_args(parent_pid: int, proc: Path) -> list[list[str]]:
    """The command lines of the python-backend stubs whose parent is ``parent_pid`` (model.py, shm region, ...,
    instance name at index 8)."""
    found: list[list[str]] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])  # fields after "(comm)": state, ppid, ...
            if ppid != parent_pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        args = [a.decode("utf-8", "replace") for a in argv if a]
        if len(args) >= 9 and args[0].endswith(STUB_BINARY):
            found.append(args)
    return found


def compile_python_models(repo: Path) -> None:
    """Write the bytecode of the repository's python models (``<model>/<version>/**.py``) before Triton loads them.

    A stub that imports model.py writes ``__pycache__`` into the version folder, and Triton counts that as a change
    of the model's files: the next load of any model in an ensemble (as a heal does) then reloaded every healthy
    member whose stub had written one, not only the dead one. With the bytecode already there and current, the stubs
    write nothing. Only for a stub running this interpreter (the bundled server), whose bytecode tag matches; a
    repository that cannot be written is left as it is, and Triton behaves as before.
    """
    for version in repo.glob("*/[0-9]*/"):
        if version.name.isdigit():
            with contextlib.suppress(OSError):
                compileall.compile_dir(version, quiet=2, workers=1)


@dataclass
class _Backoff:
    delay: float = 1.0
    next_try: float = 0.0
    failures: int = 0


@dataclass
class StubWatchdog:
    """Reloads a model whose stub died (see the module docstring). ``ready(model)`` says whether Triton lists the
    model as READY; ``reload(model)`` unloads and loads it (raising on failure)."""

    pid: Callable[[], int | None]
    ready: Callable[[str], bool | None]  # whether Triton lists the model READY; None: could not tell (try again)
    reload: Callable[[str], object]
    interval: float = 1.0
    max_backoff: float = 60.0
    healed: dict[str, int] = field(default_factory=dict)  # model -> reloads done
    _known: dict[str, str] = field(default_factory=dict)
    _missing: dict[str, int] = field(default_factory=dict)  # instance -> consecutive scans missing
    _backoff: dict[str, _Backoff] = field(default_factory=dict)
    # instance -> its shared-memory region: Triton does not remove a SIGKILLed stub's region (1 MiB of /dev/shm
    # each, which a container's memory limit counts), so the heal does
    _regions: dict[str, str] = field(default_factory=dict)
    shm: Path = Path("/dev/shm")
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Note the stubs running now (the server just became ready), then scan every ``interval``."""
        pid = self.pid()
        if pid is not None:
            self._note(stub_processes(pid))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tritonforge-stub-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._thread = None

    def _note(self, table: dict[str, tuple[str, str | None]]) -> None:
        self._known.update({instance: model for instance, (model, _region) in table.items()})
        self._regions.update({instance: region for instance, (_model, region) in table.items() if region})

    def remove_regions(self) -> None:
        """Remove the shared-memory regions of every stub seen, once the server has stopped (a stub that died and
        was never healed, e.g. its model unloaded, left its region behind)."""
        for region in self._regions.values():
            with contextlib.suppress(OSError):
                (self.shm / region).unlink()
        self._regions.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # the watchdog must outlive any one bad scan
                LOG.exception("stub watchdog: scan failed")

    def scan(self) -> list[str]:
        """One look at the stubs; returns the models reloaded."""
        pid = self.pid()
        if pid is None or os.name != "posix":
            return []
        table = stub_processes(pid)
        dead: dict[str, list[str]] = {}
        for instance, model in list(self._known.items()):
            if instance in table:
                self._missing.pop(instance, None)
                continue
            self._missing[instance] = self._missing.get(instance, 0) + 1
            if self._missing[instance] >= 2:
                dead.setdefault(model, []).append(instance)
        self._note(table)
        healed = []
        for model, instances in dead.items():
            listed = self.ready(model)
            if listed is None:  # the index did not answer: asked again next scan, not taken for "unloaded"
                LOG.info("stub watchdog: the python stub of %s (model '%s') is gone; Triton's index did not say "
                         "whether '%s' is loaded: asking again", ", ".join(sorted(instances)), model, model)
                continue
            if not listed:  # unloaded on purpose (or already reloading): nothing to heal
                LOG.info("stub watchdog: the python stub of %s is gone while '%s' is not READY (unloaded or "
                         "reloading): left alone", ", ".join(sorted(instances)), model)
                for instance in instances:
                    self._known.pop(instance, None)
                    self._missing.pop(instance, None)
                continue
            backoff = self._backoff.setdefault(model, _Backoff())
            if time.monotonic() < backoff.next_try:
                continue
            LOG.warning("stub watchdog: the python stub of %s (model '%s') died; reloading '%s'",
                        ", ".join(sorted(instances)), model, model)
            try:
                self.reload(model)
            except Exception as err:
                backoff.failures += 1
                backoff.next_try = time.monotonic() + backoff.delay
                LOG.error("stub watchdog: reloading '%s' failed (%s); next try in %.0f s", model, err, backoff.delay)
                backoff.delay = min(backoff.delay * 2, self.max_backoff)
                continue
            self._backoff.pop(model, None)
            live = {region for _model, region in stub_processes(pid).values()}  # never remove a running stub's
            for instance in instances:
                self._known.pop(instance, None)
                self._missing.pop(instance, None)
                region = self._regions.pop(instance, None)
                if region is not None and region not in live:
                    with contextlib.suppress(OSError):
                        (self.shm / region).unlink()
            self.healed[model] = self.healed.get(model, 0) + 1
            LOG.warning("stub watchdog: '%s' serves again", model)
            healed.append(model)
        return healed
