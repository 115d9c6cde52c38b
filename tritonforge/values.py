"""Rules about plain argument values that every layer checks, written once. It sits beside errors.py at the bottom
of the layers (ARCHITECTURE.md): the spec, builders, ensembles, the access layer, clients, releases, deploy and the
server launcher all import it, and it imports nothing of tritonforge."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing.TypeIs is Python 3.13's; an annotation only, so never imported at run time
    from typing_extensions import TypeIs


def is_whole(value: object) -> TypeIs[numbers.Integral]:
    """A whole number that is not a bool: an int, a numpy integer (numpy.int64 from an array or a DataFrame) or any
    other numbers.Integral. True is not 1, 2.0 not 2, "2" not 2. A caller that keeps the value stores ``int(value)``,
    so a numpy integer never reaches JSON, YAML or a protobuf field."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
