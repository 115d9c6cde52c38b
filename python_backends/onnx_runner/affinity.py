"""Pinning a cpu encoder instance to cores of its own (model parameter `cpu_affinity: instance`).

Each instance of the cpu runner is a python-backend stub process with one one-thread ONNX Runtime session per core
it was given (model.py: `cores // instances`). Unpinned, Linux moves those threads between cores as the tokenizer
stub, tritonserver and clients wake up; pinned, instance k keeps cores of its own and their caches. Off unless the
parameter asks for it: on a machine shared with other work, a pinned instance cannot move to an idle core.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any


def instance_index(instance_name: str, instance_groups: Iterable[Mapping[str, Any]]) -> int:
    """This instance's index among all of the model's instances: Triton names instance i of group g
    `<model>_<g>_<i>` (e.g. minilm_encoder_0_1), and groups are numbered in config order."""
    group, index = (int(part) for part in instance_name.rsplit("_", 2)[1:])
    counts = [max(1, int(g.get("count", 1))) for g in instance_groups]
    return sum(counts[:group]) + index


def cores_for(index: int, threads: int, allowed: Iterable[int]) -> list[int]:
    """Cores for instance ``index`` running ``threads`` threads: the next ``threads`` of the ``allowed`` cores
    (the process's affinity, which a container's cpuset already narrows), wrapping round when instances x
    threads exceed them."""
    allowed = sorted(allowed)
    return sorted({allowed[(index * threads + i) % len(allowed)] for i in range(threads)})


def pin_process(cores: Iterable[int]) -> int:
    """Every thread of this process onto ``cores`` (threads started later inherit it). Returns how many threads."""
    tasks = os.listdir("/proc/self/task")
    for task in tasks:
        os.sched_setaffinity(int(task), cores)
    return len(tasks)
