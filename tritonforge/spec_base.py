"""Base classes of the deployment spec: frozen pydantic models, and cross-field rules that read the raw input.

The cross-field rules (the ones Triton enforces at load time) read the raw data in wrap validators, so they are
reported together with the field errors of the same object instead of being skipped when a neighbouring field
is wrong. Builders that type their own settings (e.g. TensorRT-LLM parameters) extend these too.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from tritonforge.values import is_whole

# Whole numbers are strict (true is not 1, 2.0 not 2, "2" not 2: values.is_whole's rule) and bounded by the type
# they become: Triton's config fields are mostly int32 (max_batch_size, count, preferred sizes), so that is the
# default bound, and a value beyond it is a spec error rather than protobuf's "Value out of range" at build time.
INT32_MAX, INT64_MAX = 2**31 - 1, 2**63 - 1
NonNeg = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True)]
Pos = Annotated[int, Field(ge=1, le=INT32_MAX, strict=True)]
Big = Annotated[int, Field(ge=0, le=INT64_MAX, strict=True)]  # microseconds and bytes (uint64/int64 fields)
Flag = Annotated[bool, Field(strict=True)]  # true or false, not 1 or "yes"
Whole = Annotated[int, Field(strict=True)]  # any sign, int32 where it becomes a config field
Found = list[tuple[tuple[str | int, ...], str]]  # (location relative to the object, message)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def raw_int(value: Any) -> int | None:
    """An int-like raw value, or None when pydantic will reject it anyway (its own error covers that)."""
    if is_whole(value):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def raw_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def raw_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_details(err: PydanticValidationError) -> list[InitErrorDetails]:
    return [
        InitErrorDetails(
            type=PydanticCustomError(e["type"], e["msg"]),
            loc=tuple(e["loc"]),
            input=e.get("input"),
        )
        for e in err.errors()
    ]


class Checked(Frozen):
    """A spec object with cross-field rules; `_cross` reads the raw input and must tolerate wrong types."""

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _cross_fields(cls, data: Any, handler: Any) -> Any:
        extra = [
            InitErrorDetails(type=PydanticCustomError("tritonforge", msg), loc=loc, input=None)
            for loc, msg in (cls._cross(data) if isinstance(data, dict) else [])
        ]
        try:
            result = handler(data)
        except PydanticValidationError as err:
            if not extra:
                raise
            raise PydanticValidationError.from_exception_data(err.title, [*_as_details(err), *extra]) from None
        if extra:
            raise PydanticValidationError.from_exception_data(cls.__name__, extra)
        return result
