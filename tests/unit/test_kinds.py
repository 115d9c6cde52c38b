"""The registry of model kinds: naming in one place, dependency order, every kind registered."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import yaml

from tritonforge.builders.kinds import build_order, kind_of, kinds
from tritonforge.naming import triton_model_names
from tritonforge.spec import KINDS, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_every_spec_kind_has_one_registered_kind() -> None:
    registered = [get_args(k.spec_class.model_fields["kind"].annotation)[0] for k in kinds()]
    assert sorted(registered) == sorted(KINDS)


def test_registry_names_equal_the_names_the_spec_checks_for_collisions() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        spec = load_spec(path)
        raw = yaml.safe_load(path.read_text())["models"]
        for key, model in spec.models.items():
            assert kind_of(model).triton_names(key, model) == triton_model_names(key, raw[key]), (path.name, key)


def test_the_demo_repository_holds_exactly_the_registered_names(demo_repo: Path) -> None:
    from tritonforge.demo import demo_spec

    spec = demo_spec(EXAMPLES / "rag.yaml", stand_in_decoder=True)[0]
    named = {n for key, model in spec.models.items() for n in kind_of(model).triton_names(key, model)}
    assert named == {p.name for p in demo_repo.iterdir() if p.is_dir()}


def test_entries_build_after_what_they_build_on_whatever_the_spec_order() -> None:
    spec = parse_spec(
        {
            "name": "order",
            "models": {  # written consumers first
                "answer": {"kind": "rag", "retriever": "docs", "llm": "chat"},
                "docs": {"kind": "retriever", "embedder": "enc", "corpus": "c.jsonl", "reranker": "rr"},
                "chat": {"kind": "llm", "checkpoint": "random:llama-tiny"},
                "rr": {"kind": "reranker", "checkpoint": "random:bert-tiny"},
                "enc": {"kind": "embedding", "checkpoint": "random:bert-tiny"},
            },
        }
    )
    order = build_order(spec)
    assert order == ["enc", "rr", "docs", "chat", "answer"]  # registry order among independent entries
    for key, model in spec.models.items():
        for dependency in kind_of(model).dependencies(model):
            assert order.index(dependency) < order.index(key)
