"""The cores a cpu runner may use, and pinning an instance to cores of its own (`cpu_affinity: instance`).

Each instance of the cpu runner is a python-backend stub process with one one-thread ONNX Runtime session per core
it was given (model.py: `cores // instances`). Unpinned, Linux moves those threads between cores as the tokenizer
stub, tritonserver and clients wake up; pinned, instance k keeps cores of its own and their caches. Off unless the
parameter asks for it: on a machine shared with other work, a pinned instance cannot move to an idle core.
"""

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


def instance_index(instance_name, instance_groups):
    """This instance's index among all of the model's instances: Triton names instance i of group g
    `<model>_<g>_<i>` (e.g. minilm_encoder_0_1), and groups are numbered in config order."""
    group, index = (int(part) for part in instance_name.rsplit("_", 2)[1:])
    counts = [max(1, int(g.get("count", 1))) for g in instance_groups]
    return sum(counts[:group]) + index


def cores_for(index, threads, allowed):
    """Cores for instance ``index`` running ``threads`` threads: the next ``threads`` of the ``allowed`` cores
    (the process's affinity, which a container's cpuset already narrows), wrapping round when instances x
    threads exceed them."""
    allowed = sorted(allowed)
    return sorted({allowed[(index * threads + i) % len(allowed)] for i in range(threads)})


def pin_process(cores):
    """Every thread of this process onto ``cores`` (threads started later inherit it). Returns how many threads."""
    tasks = os.listdir("/proc/self/task")
    for task in tasks:
        os.sched_setaffinity(int(task), cores)
    return len(tasks)
