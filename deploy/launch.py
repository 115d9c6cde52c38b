"""How a pod runs Triton for a built repository: the GPUs one replica needs (instance groups, TensorRT-LLM's
tp_size x pp_size) and the launch (one tritonserver, or upstream's mpirun launch of one rank per GPU)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge.errors import Problem

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


@dataclass(frozen=True)
class GPUNeed:
    """GPUs one replica needs (`needed`) and can use at most (`usable`; None: any number, e.g. KIND_GPU groups
    without a gpus list run an instance on every visible GPU)."""

    needed: int
    usable: int | None
    why: tuple[str, ...] = field(default_factory=tuple)


def _id_groups(text: str) -> list[list[int]]:
    """TensorRT-LLM's gpu_device_ids parameter: '0,1;2,3' -> [[0, 1], [2, 3]]."""
    return [[int(i) for i in group.split(",") if i.strip()] for group in text.split(";") if group.strip()]


def _parallel_sizes(repo: Path, parallel: dict[str, Any], name: str) -> dict[str, Any]:
    """A TensorRT-LLM model's record in tritonforge.json's `parallel` (tp_size, pp_size, runtime)."""
    from tritonforge.trtllm.compatibility import MANIFEST_NAME

    sizes = parallel.get(name)
    if sizes is None:  # not recorded (older build): the engine manifest shipped in the repository
        manifests = sorted(repo.glob(f"{name}/*/engine/{MANIFEST_NAME}"))
        settings = json.loads(manifests[0].read_text()).get("settings", {}) if manifests else {}
        sizes = {"tp_size": settings.get("tp_size", 1), "pp_size": settings.get("pp_size", 1)}
    return sizes


def gpu_need(repo: Path, info: dict[str, Any], configs: dict[str, ModelConfig]) -> GPUNeed:
    """GPUs per replica from the repository's instance groups and its TensorRT-LLM models' tp_size × pp_size."""
    if info.get("target") != "gpu":
        return GPUNeed(0, 0, ("the cpu target uses no GPU",))
    parallel: dict[str, Any] = info.get("parallel") or {}
    ids: set[int] = set()
    any_gpu = False
    why: list[str] = []
    for name, config in configs.items():
        for group in config.instance_group:
            if group.kind in (0, 1):  # KIND_AUTO, KIND_GPU (the gpu target renders GPU instances)
                if group.gpus:
                    ids.update(group.gpus)
                    why.append(f"{name} instance group on GPUs {','.join(map(str, group.gpus))}")
                else:
                    any_gpu = True
        # an LLM API model is a python-backend model: only the build's record says it runs tp_size × pp_size GPUs
        if config.backend != "tensorrtllm" and name not in parallel:
            continue
        sizes = _parallel_sizes(repo, parallel, name)
        world = int(sizes.get("tp_size", 1)) * int(sizes.get("pp_size", 1))
        param = config.parameters.get("gpu_device_ids")
        groups = _id_groups(param.string_value) if param is not None and param.string_value else [list(range(world))]
        for device_ids in groups:
            ids.update(device_ids)
        why.append(
            f"{name}: tp_size {sizes.get('tp_size', 1)} × pp_size {sizes.get('pp_size', 1)} = {world} GPU(s) per "
            f"engine, {len(groups)} engine instance(s) on GPUs {';'.join(','.join(map(str, g)) for g in groups)}"
        )
    needed = max(ids) + 1 if ids else (1 if any_gpu else 0)
    if any_gpu:
        why.append("KIND_GPU instance groups without a gpus list use every GPU of the pod")
    return GPUNeed(needed, None if any_gpu else needed, tuple(why))


@dataclass(frozen=True)
class Launch:
    """How the pod starts Triton: `ranks` tritonserver processes (under mpirun when `mpi`); ranks > 0 load only
    `engines`, the TensorRT-LLM engine models whose executor spans every rank."""

    ranks: int = 1
    mpi: bool = False
    engines: tuple[str, ...] = ()


def triton_launch(
    repo: Path, info: dict[str, Any], configs: dict[str, ModelConfig]
) -> tuple[Launch, list[Problem]]:
    """The launch the repository's TensorRT-LLM models need (tritonforge.json `parallel.<model>.runtime`).

    'engine' (the C++ tensorrtllm backend; the default for older builds that record no runtime): the executor runs
    in leader mode over MPI_COMM_WORLD, so an engine of tp_size × pp_size = world > 1 needs `world` ranks.
    'llmapi' (upstream's python model triton_backend/all_models/llmapi): one rank; the LLM API spawns its own
    tp_size × pp_size workers.
    """
    where = str(repo / "tritonforge.json")
    parallel: dict[str, Any] = info.get("parallel") or {}
    if info.get("target") != "gpu":
        return Launch(), []
    problems: list[Problem] = []
    engines: dict[str, int] = {}
    llmapi: list[str] = []
    for name, config in configs.items():
        if config.backend != "tensorrtllm" and name not in parallel:
            continue
        sizes = _parallel_sizes(repo, parallel, name)
        runtime = sizes.get("runtime", "engine")  # repositories built before `runtime` was recorded: engines
        if runtime == "llmapi":
            llmapi.append(name)
        elif runtime == "engine":
            engines[name] = int(sizes.get("tp_size", 1)) * int(sizes.get("pp_size", 1))
        else:
            problems.append(Problem(where, f"parallel.{name}.runtime {runtime!r}: expected 'engine' or 'llmapi'"))
    world = max(engines.values(), default=1)
    if world > 1 and len(set(engines.values())) > 1:
        sizes_text = ", ".join(f"{n}: {w}" for n, w in sorted(engines.items()))
        problems.append(
            Problem(
                where,
                f"TensorRT-LLM engines of different world sizes (tp_size × pp_size: {sizes_text}) cannot share a "
                "pod: every rank of the MPI launch runs each engine's executor over the same MPI world; build them "
                "with one tp_size × pp_size or deploy them as separate repositories",
            )
        )
    if world > 1 and llmapi:
        problems.append(
            Problem(
                where,
                f"{', '.join(llmapi)} (runtime llmapi) cannot share a pod with the {world}-rank MPI launch of "
                f"{', '.join(sorted(engines))} (runtime engine): upstream's llmapi model takes a multi-rank "
                "MPI_COMM_WORLD as its own workers; deploy them as separate repositories",
            )
        )
    if world > 1:
        return Launch(world, True, tuple(sorted(engines))), problems
    # upstream launches the llmapi model with scripts/launch_triton_server.py's default world size 1: mpirun -n 1
    return Launch(1, bool(llmapi)), problems


def triton_command(launch: Launch, args: list[str], repository: str, drain: int) -> tuple[list[str], list[str]]:
    """The container's command and args: `tritonserver <args>`, or upstream's MPI launch of `launch.ranks` ranks.

    Reproduces get_cmd() of NVIDIA/TensorRT-LLM triton_backend/scripts/launch_triton_server.py
    @ 0b06796b2c7895930fecff48a1e205ab14a19c51 (earlier: triton-inference-server/tensorrtllm_backend
    scripts/launch_triton_server.py @ eb71a0307386d297673307e579616471d9edcf56):

        mpirun --allow-run-as-root -n 1 tritonserver --model-repository=R ... --disable-auto-complete-config
            --backend-config=python,shm-region-prefix-name=prefix0_ :
            -n 1 tritonserver --model-repository=R ... --model-control-mode=explicit --load-model=tensorrt_llm
            --disable-auto-complete-config --backend-config=python,shm-region-prefix-name=prefix1_ : ...

    Each rank's python-backend stubs get their own shared-memory prefix, and ranks > 0 load only the engine models
    (their pre/post-processing and other models live on rank 0). Two differences from upstream: no trailing ':'
    (mpirun's MPMD separator, needless after the last rank), and ranks > 0 get --allow-http/grpc/metrics=false where
    upstream passes every rank rank 0's ports. A worker never reaches Triton's endpoint start-up (the tensorrtllm
    backend blocks in model initialisation until the leader shuts down, then exits), so this changes nothing
    upstream relies on; it makes the pod's ports provably rank 0's.
    """
    if not launch.mpi:
        return ["tritonserver"], list(args)
    out = ["--allow-run-as-root"]  # containers run as root; Open MPI refuses root without it
    for rank in range(launch.ranks):
        if rank:
            out.append(":")
            flags = [
                f"--model-repository={repository}",
                "--model-control-mode=explicit",
                *(f"--load-model={name}" for name in launch.engines),
                "--disable-auto-complete-config",
                "--allow-http=false",
                "--allow-grpc=false",
                "--allow-metrics=false",
                f"--exit-timeout-secs={drain}",
            ]
        else:
            flags = list(args)
        out += ["-n", "1", "tritonserver", *flags, f"--backend-config=python,shm-region-prefix-name=prefix{rank}_"]
    return ["mpirun"], out
