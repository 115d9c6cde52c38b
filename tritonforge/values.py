"""Rules about plain argument values that every layer checks, written once. It sits beside errors.py at the bottom
of the layers (ARCHITECTURE.md): the spec, builders, ensembles, the access layer, clients, releases, deploy and the
server launcher all import it, and it imports nothing of tritonforge."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing.TypeIs is Python 3.13's; an annotation only, so never imported at run time
    from typing_extensions import TypeIs


def is_whole(value: object) -> TypeIs[numbers.Integral]:
    """A whole number that is not a bool: an int, a numpy integer (numpy.int64 from an array or a DataFrame) or any
    other numbers.Integral. True is not 1, 2.0 not 2, "2" not 2. A caller that keeps the value stores ``int(value)``,
    so a numpy integer never reaches JSON, YAML or a protobuf field."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object, *, finite: bool = True) -> TypeIs[float | numbers.Real]:
    """A real number that is not a bool: an int, a float, a numpy integer or floating scalar (numpy.float32 from a
    config, numpy.float64 from a DataFrame) or any other numbers.Real. True is not 1.0, "0.5" not 0.5. With
    ``finite`` (the default) NaN, the infinities and an int too large for a float are refused too: NaN passes a
    check written as ``not value <= 0`` and inf overflows where a number of seconds is used (a socket timeout,
    round()). ``finite=False`` lets them through, for a caller that hands the value on to a check that names them
    itself. A caller that keeps the value stores ``float(value)``, so a numpy scalar never reaches JSON, a protobuf
    field or a subprocess argument. (``float | numbers.Real`` is numbers.Real spelled so that a type checker, which
    does not know that float is one, keeps a value annotated ``float`` a float.)"""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    if not finite:
        return True
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range: float(value) could not keep it
        return False
