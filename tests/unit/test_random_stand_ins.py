"""`random:` checkpoints and adapters: explicit stand-ins, made once, said at build and serve time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonforge.builders.checkpoints import resolve_checkpoint
from tritonforge.errors import BuildError


def test_a_random_checkpoint_is_made_once_and_is_a_real_checkpoint() -> None:
    first = resolve_checkpoint("random:cross-encoder")
    assert (first / "config.json").is_file() and first.name == "random-cross-encoder"
    assert resolve_checkpoint("random:cross-encoder") == first
    with pytest.raises(BuildError, match="unknown kind; random stand-ins are cross-encoder, decoder, bert"):
        resolve_checkpoint("random:giraffe")


def test_the_build_says_what_is_random_and_serve_reads_it_back(tmp_path: Path) -> None:
    from tritonforge.build import build
    from tritonforge.cli import _random_stand_ins
    from tritonforge.spec import parse_spec

    spec = parse_spec({"name": "t", "target": "cpu", "models": {"chat": {
        "kind": "llm", "checkpoint": "random:decoder", "max_input_len": 64, "max_seq_len": 128,
        "adapters": {"support": {"path": "random:support"}}}}})
    report = build(spec, tmp_path / "r")
    said = [n for n in report.notes if n.startswith("RANDOM stand-in")]
    assert said == ["RANDOM stand-in: chat: random:decoder (a tiny model with random weights: its output means "
                    "nothing)", "RANDOM stand-in: chat: adapter 'support' is random:support (a random LoRA: its "
                    "effect means nothing)"]
    assert _random_stand_ins(report.repo) == [n.removeprefix("RANDOM stand-in: ") for n in said]
    manifest = json.loads((report.repo / "tritonforge.json").read_text())
    assert len(manifest["random_stand_ins"]) == 2
    assert (report.repo / "tensorrt_llm" / "1" / "adapters" / "support" / "adapter_config.json").is_file()
