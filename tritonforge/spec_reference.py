"""The spec reference (docs/spec-reference.md), generated from the spec's own types: every section a pydantic model
reachable from :class:`~tritonforge.spec.Spec`, every row a field with its type, constraints, default and
description, so the reference cannot drift from what ``load_spec`` accepts.

    python -m tritonforge.spec_reference > docs/spec-reference.md     # tests/unit/test_spec_reference.py checks it
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

HEADER = """# Spec reference

Generated from the spec's types by `python -m tritonforge.spec_reference` (do not edit by hand; a test checks that
this page matches the code). The guide with examples is [spec.md](spec.md); this page lists every field.
"""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation mentions (through unions, lists, dicts, Annotated)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def reachable_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model reachable from its fields, in first-seen order (depth first)."""
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for inner in _models_in(field.annotation):
                visit(inner)

    visit(root)
    return seen


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"list[{inner}]"
    if origin is dict:
        return f"map[{_type_name(args[0])}, {_type_name(args[1])}]"
    if annotation is type(None):
        return "null"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value!r}`" for m in annotation)
    name = getattr(annotation, "__name__", None) or str(annotation)
    return re.sub(r"\b(typing|tritonforge\.[\w.]+)\.", "", name)


_CONSTRAINTS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "min length", "max_length": "max length",
                "pattern": "matches"}


def _constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, label in _CONSTRAINTS.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{label} `{value}`")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(its defaults)"
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            if all(not v.model_dump(exclude_defaults=True) for v in value):
                return f"{len(value)} with its defaults"
            return "`[" + ", ".join(json.dumps(v.model_dump(exclude_defaults=True)) for v in value) + "]`"
        return _literal(value) if value not in ({}, []) else "empty"
    if field.default is PydanticUndefined:
        return "**required**"
    value = field.default
    if isinstance(value, enum.Enum):
        value = value.value
    return _literal(value)


def _literal(value: Any) -> str:
    """A default as it is written in YAML/JSON (``true``, ``null``, ``"x"``), or the object's repr."""
    try:
        return f"`{json.dumps(value)}`"
    except TypeError:
        return f"`{value!r}`"


def _summary(model: type[BaseModel]) -> str:
    doc = inspect.getdoc(model) or ""
    if model.__doc__ is None or doc == inspect.getdoc(BaseModel):
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def render(root: type[BaseModel] | None = None) -> str:
    if root is None:
        from tritonforge.spec import Spec

        root = Spec
    out = [HEADER]
    for model in reachable_models(root):
        out.append(f"## {model.__name__}\n")
        summary = _summary(model)
        if summary:
            out.append(summary + "\n")
        out.append("| field | type | default | description |")
        out.append("|---|---|---|---|")
        for name, field in model.model_fields.items():
            kind = _type_name(field.annotation)
            limits = _constraints(field)
            if limits:
                kind += f" ({limits})"
            text = " ".join((field.description or "").split()).replace("|", "\\|")
            out.append(f"| `{field.alias or name}` | {kind} | {_default(field)} | {text} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
