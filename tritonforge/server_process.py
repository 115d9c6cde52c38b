"""The server's process group and its log: terminating the group (python stubs included) and reading why a model
did not load from what tritonserver printed."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tritonforge.stop_signals import STOP_SIGNALS, not_ignored

LOG = logging.getLogger("tritonforge.server")


LOG_TAIL_LINES = 40
PORT_IN_USE = re.compile(r"already in use|address already in use", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^(E\d{4} |error:|\[libprotobuf ERROR|.*\bfailed to load\b)", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------------- the log


# What tritonserver prints on every start of a host with no GPU: not a cause, so left out of a failure's excerpt there
CPU_HOST_NOISE = re.compile(
    r"Unable to allocate pinned system memory|CUDA memory pool disabled|CudaDriverHelper has not been initialized"
    r"|Collecting CPU metrics"
)
_EMPTY_GLOG = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] *$")  # a table's first line, the table left out


def log_excerpt(text: str, tail: int = LOG_TAIL_LINES, *, gpu_host: bool = True) -> str:
    """Error lines from anywhere in the log, then its last ``tail`` lines (Triton's wide tables left out, and on a
    host without a GPU the lines every start prints there)."""
    lines = [
        ln[:600]
        for ln in text.splitlines()
        if ln.strip() and not ln.startswith(("+-", "+=", "|")) and "<frozen importlib" not in ln
        and not _EMPTY_GLOG.match(ln) and (gpu_host or not CPU_HOST_NOISE.search(ln))
    ]
    last = lines[-tail:]
    head = len(lines) - len(last)
    errors = [ln for ln in lines[:head] if _ERROR_LINE.match(ln)][-20:]
    parts = [*errors, "..."] if errors else []
    return "\n".join(parts + last)


def short_reason(reason: str) -> str:
    """A load failure's reason without the interpreter's import machinery frames."""
    keep = [ln.rstrip() for ln in reason.strip().splitlines() if ln.strip() and "<frozen importlib" not in ln]
    return "\n    ".join(keep)


def still_loading(log: str) -> list[str]:
    """Models whose load began but neither succeeded nor failed (per the log)."""
    started = re.findall(r'"loading: ([^:"]+):\d+"', log)
    done = set(re.findall(r"(?:successfully loaded|failed to load) '([^']+)'", log))
    return sorted({m for m in started if m not in done})


NO_REASON = "not loaded (see the server log)"


def reason_from_log(model: str, log: str) -> str:
    # 'm', "m" or m: as a whole name (a model called "e" is not in "instance:")
    named = re.compile(rf"""'{re.escape(model)}'|"{re.escape(model)}"|(?<![\w.-]){re.escape(model)}:""")
    lines = log.splitlines()
    found = [i for i, ln in enumerate(lines) if _ERROR_LINE.match(ln) and named.search(ln)]
    if not found:
        return NO_REASON
    # glog prefix: E1123 16:07:51.864068 5349 file.cc:123] "message" (I/W too: "failed to load 'm'" is an I line)
    reason = re.sub(r"^[IWE]\d{4} [\d:.]+ +\d+ [^\]]+\] ", "", lines[found[-1]]).strip().strip('"')
    # a config that does not parse: protobuf printed the position and the problem just before
    for ln in reversed(lines[max(0, found[-1] - 3) : found[-1]]):
        if ln.startswith("[libprotobuf ERROR"):
            reason += ": " + ln.split("] ", 1)[-1].strip()
            break
    if reason == f"failed to load '{model}'" and (stub := _stub_failure(model, lines)):
        reason += f": {stub}"
    return reason


_STUB_FAILED = re.compile(r"Failed to initialize Python stub: (.+)$")


def _stub_failure(model: str, lines: list[str]) -> str:
    """Why ``model``'s python stub did not start ("ModuleNotFoundError: No module named 'x'"): Triton says only
    "failed to load 'm'", and prints the stub's error on a line of its own without the model's name; the traceback
    below it ("At:" and indented frames) names the model's folder, which ties the two when several models load."""
    failures = []
    for i, ln in enumerate(lines):
        found = _STUB_FAILED.search(ln)
        if not found:
            continue
        frames = []
        for frame in lines[i + 1 : i + 40]:
            if frame.strip() != "At:" and not frame.startswith((" ", "\t")):
                break
            frames.append(frame)
        failures.append((found.group(1).strip(), any(f"/{model}/" in f for f in frames)))
    mine = [why for why, ours in failures if ours]
    if mine:
        return mine[-1]
    return failures[0][0] if len(failures) == 1 else ""  # one stub failed, and it printed no frame: it is this one


def startup_causes(log: str, failed: Mapping[str, str] | None = None) -> list[str]:
    """Why a start that timed out could not finish, one "model 'm' did not load: reason" per model, for the first
    lines of the error (the excerpt below them is long, and its last lines are rarely the cause): the models the
    repository index reported as failed (``failed``), then those the log says failed to load, then those still
    loading whose log names a reason."""
    causes = dict(failed or {})
    for model in re.findall(r"failed to load '([^']+)'", log):
        causes.setdefault(model, reason_from_log(model, log))
    for model in still_loading(log):
        if model not in causes and (reason := reason_from_log(model, log)) != NO_REASON:
            causes[model] = reason
    return [f"model '{model}' did not load: {reason}" for model, reason in causes.items()]


# ---------------------------------------------------------------------------------------------------- the process


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel whether the group has members at all
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    alive = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ... ; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _shm_regions(pids: list[int]) -> list[Path]:
    """The python backend's shared-memory regions, named on its stubs' command lines."""
    regions = []
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        regions += [Path("/dev/shm") / a.decode() for a in args if a.startswith(b"triton_python_backend_shm_region")]
    return regions


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the server (it shuts its stubs down), SIGKILL its whole group after ``timeout``, reap leftovers.

    A server that has to be killed leaves its stubs' shared-memory regions in /dev/shm: they are removed too.
    """
    pgid = proc.pid  # the server leads its own process group (start_new_session)
    regions = _shm_regions(_group_alive(pgid))
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if timeout > 0:  # 0: asked to stop at once
                LOG.warning("tritonserver (pid %d) did not exit %.0fs after SIGTERM: killing it", proc.pid, timeout)
            _kill_group(pgid, signal.SIGKILL)
            proc.wait()
        except BaseException:
            # interrupted while it drains (a second Ctrl-C: "stop now"): nothing is left running or in /dev/shm
            _kill_group(pgid, signal.SIGKILL)
            proc.wait()
            _remove(regions)
            raise
    # stubs whose server died without shutting them down
    if _group_alive(pgid):
        _kill_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(pgid):
            _kill_group(pgid, signal.SIGKILL)
    _remove(regions)  # gone already after a graceful exit


def _remove(regions: list[Path]) -> None:
    for region in regions:
        with contextlib.suppress(OSError):
            region.unlink()


def exit_text(code: int | None) -> str:
    """A return code as a person reads it: "code 1", "signal SIGKILL (killed from outside, or out of memory)"."""
    if code is None or code >= 0:
        return f"code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    hint = {
        # nothing in tritonserver sends itself SIGKILL: someone did, and with memory short it is the kernel
        "SIGKILL": " (killed from outside: the kernel's OOM killer is the likely cause when memory ran short; "
                   "`dmesg` or the pod's OOMKilled status says)",
        "SIGSEGV": " (a crash)",
        "SIGABRT": " (a crash)",
    }
    return f"signal {name}{hint.get(name, '')}"


def abandon(proc: subprocess.Popen[bytes], tmpdir: Path | None) -> None:
    """A server object collected (or the interpreter exiting) while its process still runs."""
    terminate_group(proc, 10.0)
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def deferred_signals(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP (the signals `serve` stops on) while the block runs, then deliver the first one
    that came to the handler it would have reached. Only the main thread can set handlers: elsewhere the block runs
    as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    signums = not_ignored(signums)  # one ignored (nohup's SIGHUP) must not take the place of a later SIGTERM
    previous = {s: signal.getsignal(s) for s in signums}
    for s in signums:
        signal.signal(s, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if received:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])  # the default action: SIGINT raises KeyboardInterrupt


def pdeathsig() -> Any:
    """A preexec_fn that has the kernel SIGTERM the server when its parent dies (Linux), or None.

    Only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked exits.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl  # resolved here: nothing to import after fork
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec
