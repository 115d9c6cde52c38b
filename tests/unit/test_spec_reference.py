"""docs/spec-reference.md is generated from the spec's types and must match them (regenerate, never hand-edit)."""

from __future__ import annotations

import os
from pathlib import Path

from tritonforge.spec import LLMModel, Spec
from tritonforge.spec_reference import reachable_models, render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "spec-reference.md"


def test_the_reference_page_matches_the_spec() -> None:
    text = render()
    if os.environ.get("TRITONFORGE_UPDATE_GOLDEN"):
        PAGE.write_text(text)
    assert PAGE.read_text() == text, "run: python -m tritonforge.spec_reference > docs/spec-reference.md"


def test_every_model_kind_and_nested_setting_has_a_section() -> None:
    models = reachable_models(Spec)
    assert LLMModel in models
    text = render()
    for model in models:
        assert f"## {model.__name__}\n" in text
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in text
