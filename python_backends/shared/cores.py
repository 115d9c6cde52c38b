"""How many cores a python-backend model may use. One source, shipped into the version folder of every model that
sizes threads by it (python_backends.SHARED: onnx_runner, cpu_llm, retriever), since each model folder is copied
alone into a repository and loads it from next to its model.py."""

from __future__ import annotations

import math
import os

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def available_cores(cpu_max_path: str = CGROUP_CPU_MAX) -> int:
    """How many cores this process may use: its affinity set (a container's cpuset; os.cpu_count() counts the
    host's), capped by a cgroup v2 CPU quota rounded up (`docker --cpus=2`, a Kubernetes CPU limit). Sizing the
    sessions by the host's count gave a container limited to 2 of 64 cores 32 sessions per instance."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open(cpu_max_path) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to read: the affinity set alone
    return max(1, cores)


# bf16 ------------------------------------------------------------------------------------------------------------
# The builders read the same rule (builders/onnx_common.py loads this file): one copy of which flags mean native bf16.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str] | None:
    """The flags of ``cpuinfo`` (default: this machine's /proc/cpuinfo); None when they cannot be read (not Linux)."""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return frozenset(flags) if flags else None


def native_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU computes bf16 natively (AMX or AVX512-BF16); without them PyTorch emulates bf16, slower than
    fp32. None when the flags cannot be read (not Linux)."""
    flags = cpu_flags(cpuinfo)
    return None if flags is None else any(flag in flags for flag in BF16_FLAGS)


def emulated_bf16_warning(what: str, cpuinfo: str | None = None) -> str | None:
    """A warning for a model serving bf16 on a CPU that emulates it (None otherwise): the build machine's CPU was
    checked when it was built, but a repository is served where it is deployed."""
    if native_bf16(cpuinfo) is not False:
        return None
    return (f"{what}: bf16 on a CPU with neither amx_bf16 nor avx512_bf16: PyTorch emulates bf16 here, slower than "
            "fp32; serve fp32 on this machine, or bf16 where the CPU has AMX")
