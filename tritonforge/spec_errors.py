"""The near miss of an unknown field in a spec: ``models.minilm.poolng: unknown field (did you mean 'pooling'?)``.

Pydantic's error names the unknown key and where it is, not what was allowed there: the allowed fields are those of
the model class the error's location leads to, found by following the location through the validated class's field
annotations (unions by their discriminator tag, mappings by key, lists by index).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel


def _tags(member: Any) -> set[Any]:
    """What pydantic may put in an error's location for one member of a union: a discriminator value (the Literal
    of a field), or the member's class name."""
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return set()
    literals = {v for f in member.model_fields.values() if get_origin(f.annotation) is Literal
                for v in get_args(f.annotation)}
    return {member.__name__, *literals}


def _model_at(annotation: Any, loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class an error location leads to from ``annotation``, or None where it cannot be followed."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _model_at(get_args(annotation)[0], loc)
    if origin is Union or origin is types.UnionType:
        members = [m for m in get_args(annotation) if m is not type(None)]
        tagged = [m for m in members if loc and loc[0] in _tags(m)]
        if len(tagged) == 1:
            return _model_at(tagged[0], loc[1:])
        reached = {r for m in members if (r := _model_at(m, loc)) is not None}
        return reached.pop() if len(reached) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not loc:
            return annotation
        field = next((f for n, f in annotation.model_fields.items() if (f.alias or n) == loc[0]), None)
        return _model_at(field.annotation, loc[1:]) if field is not None else None
    if loc and origin is not None and issubclass(origin, Mapping):
        return _model_at(get_args(annotation)[-1], loc[1:]) if get_args(annotation) else None
    if loc and isinstance(loc[0], int) and origin in (list, tuple):
        return _model_at(get_args(annotation)[0], loc[1:]) if get_args(annotation) else None
    return None


def did_you_mean(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`` (did you mean 'pooling'?)`` for an unknown field close to one allowed at its place, else ''."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    model = _model_at(root, loc[:-1])
    if model is None:
        return ""
    allowed = [f.alias or n for n, f in model.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(loc[-1], allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
