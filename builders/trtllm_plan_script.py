"""`build --plan`: the engine builds of a repository as one shell script to run on a GPU machine.

No engine can be built without an NVIDIA GPU, and an engine must be built by the TensorRT-LLM release of the image
that serves it (engines are not portable across releases or GPU architectures). So the plan is written into the
repository as ``build_engines.sh``: run it inside the serving image (``tritonserver:<yy.mm>-trtllm-python-py3``,
which has TensorRT-LLM, ``trtllm-build`` and the examples' conversion scripts) on the serving GPU type, and it
writes each engine where the rendered ``tensorrt_llm`` config expects it (``<model>/1/engine``), with the
``engine_manifest.json`` that ``tritonforge validate --image`` checks.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from typing import Any

from tritonforge.builders.trtllm_engine import MANIFEST_NAME
from tritonforge.trtllm.images import image_info

SCRIPT_NAME = "build_engines.sh"
EXAMPLES_CANDIDATES = ("/app/examples", "/app/tensorrt_llm/examples")  # the NGC image's, then a source image's


@dataclass(frozen=True)
class EngineScript:
    text: str
    commands: tuple[str, ...]  # the build commands as written (with the script's variables)


def _var(key: str) -> str:
    return "CHECKPOINT_" + "".join(c if c.isalnum() else "_" for c in key).upper()


def _argv(argv: tuple[str, ...], subst: dict[str, str]) -> str:
    """One command line: arguments quoted, the plan's local paths replaced by the script's variables."""
    words = []
    for arg in argv:
        for path, var in subst.items():
            if arg == path or arg.startswith(path + "/"):
                words.append(f'"{var}{arg[len(path) :]}"')
                break
        else:
            words.append(shlex.quote(arg))
    return " ".join(words)


def engine_folder(key: str, model: Any) -> str:
    """Where the script writes an LLM's engine in the repository: ``<tensorrt_llm model>/1/engine``, where its
    rendered config expects it."""
    from tritonforge.builders.llm import llm_names

    return f"{llm_names(key, model).tensorrt_llm}/1/engine"


def engine_build_script(plans: list[tuple[str, Any, Any]], image: str) -> EngineScript:
    """The script for ``plans`` — (spec key, LLMModel, EnginePlan) each — served by ``image``."""
    info = image_info(image)
    version = info.tensorrt_llm if info is not None else None
    lines = [
        "#!/usr/bin/env bash",
        "# Written by `tritonforge build --plan`: builds this repository's TensorRT-LLM engines.",
        f"# Run it inside {image}",
        f"# (TensorRT-LLM {version or 'unknown'}) on the GPU type that will serve the engines.",
        "# CHECKPOINT_<MODEL> variables override where each Hugging Face checkpoint is read from.",
        "set -euo pipefail",
        'REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'WORK="${TRTLLM_WORK_DIR:-$REPO/.engine-build}"',
        'EXAMPLES="${TRTLLM_EXAMPLES_DIR:-}"',
        'if [ -z "$EXAMPLES" ]; then',
        f"  for d in {' '.join(EXAMPLES_CANDIDATES)}; do",
        '    if [ -d "$d/models/core" ] || [ -d "$d/quantization" ]; then EXAMPLES="$d"; break; fi',
        "  done",
        "fi",
        'if [ -z "$EXAMPLES" ]; then',
        "  echo \"TensorRT-LLM's examples folder was not found (looked in "
        f'{", ".join(EXAMPLES_CANDIDATES)}): set TRTLLM_EXAMPLES_DIR" >&2',
        "  exit 1",
        "fi",
        'found="$(python3 -c "import tensorrt_llm; print(tensorrt_llm.__version__)" 2>/dev/null | tail -n 1)"'
        ' || { echo "TensorRT-LLM is not importable: run this script inside the serving image" >&2; exit 1; }',
    ]
    if version:
        wanted = ".".join(version.split(".")[:3])
        lines += [
            f'case "$found" in {wanted}*) ;; *)',
            f'  echo "TensorRT-LLM $found is not {version}, the release {image} serves: an engine only loads in '
            'the release that built it" >&2',
            "  exit 1;;",
            "esac",
        ]
    commands: list[str] = []
    for key, model, plan in plans:
        var = _var(key)
        engine_rel = engine_folder(key, model)
        subst = {
            str(plan.engine_dir): f"$REPO/{engine_rel}",
            str(plan.converted_dir): f"$WORK/{key}/checkpoint",
            str(plan.checkpoint): f"${var}",
        }
        examples = str(plan.commands[0][1]).split("/models/core/")[0].split("/quantization/")[0]
        for end in ("/medusa/convert_checkpoint.py", "/eagle/convert_checkpoint.py"):
            examples = examples.removesuffix(end)
        subst[examples] = "$EXAMPLES"
        lines += ["", f"# ---- {key}: {plan.architecture} ({plan.family}) -> {engine_rel}"]
        lines.append(f'{var}="${{{var}:-{plan.checkpoint}}}"')
        lines.append(f'rm -rf "$WORK/{key}" "$REPO/{engine_rel}" && mkdir -p "$WORK/{key}"')
        for argv in plan.commands:
            if argv[0] == sys.executable:
                argv = ("python3", *argv[1:])
            command = _argv(argv, subst)
            commands.append(command)
            lines.append(command)
        manifest = json.dumps(plan.manifest, sort_keys=True)
        lines += [
            f"python3 - \"$REPO/{engine_rel}/{MANIFEST_NAME}\" <<'MANIFEST'",
            "import json, sys",
            "import tensorrt, tensorrt_llm, torch",
            f"manifest = json.loads({manifest!r})",
            "major, minor = torch.cuda.get_device_capability(0)",
            "manifest.update(tensorrt_llm_version=str(tensorrt_llm.__version__),",
            "                tensorrt_version=str(tensorrt.__version__),",
            '                gpu_compute_capability=f"{major}.{minor}", gpu_name=torch.cuda.get_device_name(0))',
            'open(sys.argv[1], "w").write(json.dumps(manifest, indent=2, sort_keys=True) + "\\n")',
            "MANIFEST",
        ]
    lines += ["", 'echo "engines built; check them with: tritonforge validate \\"$REPO\\" --image ' + image + '"']
    return EngineScript("\n".join(lines) + "\n", tuple(commands))
