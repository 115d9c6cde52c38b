"""How many cores a python-backend model may use. One source, shipped into the version folder of every model that
sizes threads by it (python_backends.SHARED: onnx_runner, cpu_llm, retriever), since each model folder is copied
alone into a repository and loads it from next to its model.py."""

import math
import os

CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def available_cores(cpu_max_path=CGROUP_CPU_MAX):
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
