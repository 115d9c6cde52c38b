"""LoRA adapters on an LLM's base model: build-time checks, the adapter table, and what each target ships.

An adapter is a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``) named in the spec's
``adapters`` (``name -> AdapterSpec``); the name is what clients send as ``lora_name``. Every adapter gets a
``lora_task_id`` derived from its name alone (``task_id``), the same in every build. The table ``adapters.json``::

    {"adapters": {"<name>": {"lora_task_id": 1911284457, "path": "adapters/<name>", "system_prompt": null}, ...}}

ships in the preprocessing version folder (name -> task id, system prompt) and in the ``tensorrt_llm`` version
folder (task id -> adapter folder).

* cpu: the adapter folders ship as ``tensorrt_llm/1/adapters/<name>/``; the CPU engine loads them all with peft on
  one shared base model.
* gpu: Triton's tensorrtllm backend reads adapters in TensorRT-LLM's own format (``model.lora_weights.npy`` +
  ``model.lora_config.npy`` per task id, preloaded from ``lora_prefetch_dir``), converted at build time in numpy
  (``lora_trtllm.py``, the arithmetic of upstream's ``examples/hf_lora_convert.py``). The preprocessing step also
  ships them and sends an adapter's weights with its first request, and again when asked after an eviction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonforge.errors import BuildError

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
TABLE_FILE = "adapters.json"
ADAPTERS_FOLDER = "adapters"  # inside the cpu engine's version folder
GPU_LORA_FOLDER = "lora"  # inside the tensorrt_llm version folder: <task_id>/model.lora_{weights,config}.npy


@dataclass(frozen=True)
class Adapter:
    """A checked adapter: its name, folder, task id, rank and the files to ship."""

    name: str
    folder: Path
    lora_task_id: int
    rank: int
    target_modules: tuple[str, ...]
    system_prompt: str | None
    weights: Path

    @property
    def repo_path(self) -> str:
        return f"{ADAPTERS_FOLDER}/{self.name}"


def task_id(name: str) -> int:
    """An adapter's ``lora_task_id``, from its name alone: the same in every build, so a name keeps its weights when
    adapters are added or removed. Ids 1..N over the sorted names renumbered them: after `release add` of a build
    with one adapter more, requests for an existing adapter were answered by another one, and a rollback of one of
    the two models that share the table failed them (operations audit). 31 bits, never 0, for consumers that hold
    it in an int32; TensorRT-LLM's LoRA caches key on it as a uint64."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") & 0x7FFF_FFFF or 1


def task_ids(names: Any) -> dict[str, int]:
    """Every adapter's task id (``task_id``); a BuildError for two names that share one (rename either)."""
    ids = {name: task_id(name) for name in sorted(names)}
    by_id: dict[int, list[str]] = {}
    for name, number in ids.items():
        by_id.setdefault(number, []).append(name)
    shared = [names for names in by_id.values() if len(names) > 1]
    if shared:
        raise BuildError("adapters " + "; ".join(" and ".join(f"'{n}'" for n in names) for names in shared)
                         + " share a lora_task_id (derived from the name): rename one of them")
    return ids


def infer_source_dir(checkpoint_ref: str, checkpoint: Path) -> Path | None:
    """The spec's folder, recovered from a relative checkpoint reference and the folder it resolved to."""
    ref = Path(str(checkpoint_ref).strip()).expanduser()
    if str(checkpoint_ref).startswith("pypi:") or ref.is_absolute() or ".." in ref.parts:
        return None
    folder = Path(checkpoint)
    for _part in [p for p in ref.parts if p != "."]:
        folder = folder.parent
    return folder


def resolve_adapter_dir(path: str, source_dir: Path | None, base: Path | None = None) -> Path:
    """The adapter folder of ``path``; ``random:<name>`` is an explicit stand-in: a tiny random LoRA on ``base``
    (seeded by the name, made once in the cache), whose effect means nothing."""
    if path.startswith(RANDOM_PREFIX):
        if base is None:
            raise BuildError(f"adapter '{path}': a random stand-in needs its base checkpoint")
        return random_adapter(path[len(RANDOM_PREFIX) :].strip() or "lora", base)
    folder = Path(path).expanduser()
    if not folder.is_absolute() and source_dir is not None:
        folder = Path(source_dir) / folder
    return folder.resolve()


RANDOM_PREFIX = "random:"


def random_adapter(name: str, base: Path) -> Path:

    from tritonforge.builders.checkpoints import checkpoint_hash, default_cache_dir
    from tritonforge.builders.tiny_models import make_tiny_lora

    folder = default_cache_dir() / "checkpoints" / f"random-lora-{name}-{checkpoint_hash(base)[:12]}"
    if not (folder / ADAPTER_CONFIG).is_file():
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        make_tiny_lora(base, folder, seed=seed)
    return folder


def check_adapters(
    adapters: Mapping[str, Any],
    base_checkpoint: Path,
    *,
    source_dir: Path | None = None,
    base_hash: str | None = None,
) -> list[Adapter]:
    """Check every adapter folder (``AdapterSpec`` by name); BuildError listing every problem.

    Missing folder/config/weights, a config that is not a PEFT LoRA config, and an adapter whose declared base
    (``base_checkpoint_sha256``) is not ``checkpoint_hash(base_checkpoint)`` ("adapter for another base model",
    naming both hashes) are refused.
    """
    from tritonforge.builders.checkpoints import checkpoint_hash

    ids = task_ids(adapters)
    problems: list[str] = []
    checked: list[Adapter] = []
    base_shapes: dict[str, list[int]] | None = None
    for name in sorted(adapters):
        spec = adapters[name]
        folder = resolve_adapter_dir(spec.path, source_dir, base_checkpoint)
        where = f"adapters.{name} ({folder})"
        if not folder.is_dir():
            problems.append(f"{where}: the adapter folder does not exist")
            continue
        config_file = folder / ADAPTER_CONFIG
        weights = next((folder / w for w in WEIGHT_FILES if (folder / w).is_file()), None)
        if not config_file.is_file():
            problems.append(f"{where}: no {ADAPTER_CONFIG} (a PEFT adapter folder, from save_pretrained)")
        if weights is None:
            problems.append(f"{where}: no {' or '.join(WEIGHT_FILES)} (the adapter weights)")
        if not config_file.is_file() or weights is None:
            continue
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            problems.append(f"{where}: {ADAPTER_CONFIG} is not readable JSON ({err})")
            continue
        peft_type = str(config.get("peft_type", "")).upper()
        if peft_type != "LORA":
            problems.append(f"{where}: peft_type is {config.get('peft_type')!r}; only LoRA adapters are served")
            continue
        if spec.base_checkpoint_sha256 is not None:
            if base_hash is None:
                base_hash = checkpoint_hash(base_checkpoint)
            if spec.base_checkpoint_sha256.strip().lower() != base_hash:
                declared_base = config.get("base_model_name_or_path")
                problems.append(
                    f"{where}: adapter for another base model: it declares base_checkpoint_sha256 "
                    f"{spec.base_checkpoint_sha256} (base_model_name_or_path {declared_base!r}) but the checkpoint "
                    f"{base_checkpoint} has sha256 {base_hash}"
                )
                continue
        if base_shapes is None:  # read once, for every adapter
            base_shapes = _checkpoint_shapes(base_checkpoint)
        if (mismatch := _shape_problem(weights, base_checkpoint, base_shapes)) is not None:
            problems.append(f"{where}: adapter for another base model: {mismatch}")
            continue
        modules = config.get("target_modules") or []
        modules = (modules,) if isinstance(modules, str) else tuple(str(m) for m in modules)
        checked.append(Adapter(name, folder, ids[name], int(config.get("r", 0) or 0), modules, spec.system_prompt,
                               weights))
    if problems:
        raise BuildError("cannot serve the LoRA adapters:\n  " + "\n  ".join(problems))
    return checked


PEFT_PREFIX = "base_model.model."
LORA_SUFFIXES = {".lora_A.weight": 1, ".lora_B.weight": 0}  # the axis each shares with the base's [out, in]


def _checkpoint_shapes(base: Path) -> dict[str, list[int]]:
    """{weight name: shape} of the checkpoint's safetensors files (headers only); {} when it has none."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for path in sorted(base.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            shapes.update({k: list(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
    return shapes


def _shape_problem(weights: Path, base: Path, base_shapes: dict[str, list[int]]) -> str | None:
    """Whether the adapter's LoRA matrices fit the base checkpoint's weights (``base_shapes``): A is [r, in] and B
    [out, r] of the module's [out, in]. An adapter trained on another base built, validated, and then failed the
    whole LLM's load ("size mismatch for ...lora_A...") with every other adapter. Only safetensors on both sides
    are read (headers only); a .bin adapter or base is left to the load."""
    from safetensors import safe_open

    if weights.suffix != ".safetensors" or not base_shapes:
        return None
    with safe_open(str(weights), "pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            suffix = next((s for s in LORA_SUFFIXES if key.endswith(s)), None)
            if suffix is None:
                continue
            module = key.removeprefix(PEFT_PREFIX)[: -len(suffix)]
            target = base_shapes.get(f"{module}.weight")
            if target is None:
                return f"{key} adapts {module}, which the base checkpoint does not have"
            shape = list(f.get_slice(key).get_shape())
            axis = LORA_SUFFIXES[suffix]
            if len(shape) != 2 or len(target) != 2 or shape[axis] != target[axis]:
                return (f"{key} has shape {shape}, which does not fit {module}.weight {target} of the base checkpoint "
                        f"{base}")
    return None


def adapter_table(adapters: list[Adapter]) -> dict[str, Any]:
    return {
        "adapters": {
            a.name: {"lora_task_id": a.lora_task_id, "path": a.repo_path, "system_prompt": a.system_prompt}
            for a in sorted(adapters, key=lambda a: a.lora_task_id)
        }
    }


def table_bytes(adapters: list[Adapter]) -> bytes:
    return (json.dumps(adapter_table(adapters), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def cpu_files(adapters: list[Adapter]) -> dict[str, Path]:
    """Files the cpu engine's version folder ships: adapters/<name>/{adapter_config.json, weights}."""
    out: dict[str, Path] = {}
    for a in adapters:
        out[f"{a.repo_path}/{ADAPTER_CONFIG}"] = a.folder / ADAPTER_CONFIG
        out[f"{a.repo_path}/{a.weights.name}"] = a.weights
    return out


# the engine's dtype -> the Triton type of tensorrt_llm's `lora_weights` input: the backend passes the tensor on
# unconverted and TensorRT-LLM refuses weights whose dtype is not the engine's
TRITON_TYPES = {"float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float32": "TYPE_FP32"}


def converted_for_trtllm(adapter: Adapter, *, dtype: str = "float16", cache_dir: Path | None = None) -> dict[str, Path]:
    """gpu: the adapter in TensorRT-LLM's format ({file name: path}) stored as ``dtype`` (the engine's dtype),
    converted once per (dtype, content hash)."""
    from tritonforge.builders.artifact_cache import cached_build
    from tritonforge.builders.checkpoints import checkpoint_hash, default_cache_dir
    from tritonforge.builders.lora_trtllm import CONFIG_FILE, WEIGHTS_FILE, convert_adapter

    key = hashlib.sha256(f"lora-trtllm-v1:{dtype}:{checkpoint_hash(adapter.folder)}".encode()).hexdigest()
    final_dir = (cache_dir or default_cache_dir()) / "lora-trtllm" / key

    def load(folder: Path) -> dict[str, Path] | None:
        files = {name: folder / name for name in (WEIGHTS_FILE, CONFIG_FILE)}
        return files if all(p.is_file() for p in files.values()) else None

    return cached_build(final_dir, load=load, build=lambda tmp: convert_adapter(adapter.folder, dtype=dtype).save(tmp))


def engine_problems(adapters: list[Adapter], engine: Any) -> list[str]:
    """gpu: what the engine settings (``EngineSettings.lora``) must allow for these adapters."""
    if not adapters:
        return []
    lora = engine.lora
    if not lora.enabled:
        return ["engine.lora.enabled must be true to serve adapters (the engine needs the LoRA plugin)"]
    problems = []
    for a in adapters:
        if a.rank > lora.max_rank:
            problems.append(f"adapters.{a.name}: rank {a.rank} exceeds engine.lora.max_rank {lora.max_rank}")
    return problems
