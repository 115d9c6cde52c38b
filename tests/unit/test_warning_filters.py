"""pyproject.toml's pytest warning filters: a deprecation warned at a call site in tritonforge's own modules fails
the test; one raised inside a dependency (or at a call site of a module that only starts with the name) does not.

The filters are re-applied here alone (pytest's own parser, the ini entries only), so the check holds whatever -W
options the run was given.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from _pytest.config import parse_warning_filter

CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

# a library's deprecated function warns at its caller (stacklevel=2), its own internal use warns at itself
LIBRARY = """
import warnings

def deprecated_api(category):
    warnings.warn("deprecated_api is deprecated", category, stacklevel=2)

def uses_it_internally(category):
    warnings.warn("an internal deprecation", category, stacklevel=1)
"""
CALLER = """
def call_deprecated(category):
    deprecated_api(category)

def call_internal(category):
    uses_it_internally(category)
"""


def _module(name: str, source: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": name, **names}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def _caller(module_name: str) -> dict[str, Any]:
    library = _module("somelib.api", LIBRARY)
    return _module(
        module_name,
        CALLER,
        deprecated_api=library["deprecated_api"],
        uses_it_internally=library["uses_it_internally"],
    )


def _under_the_configured_filters(config: pytest.Config, call: Callable[[], None]) -> list[str]:
    """Run ``call`` with only pyproject's filterwarnings in force; the warnings it left as warnings."""
    entries = config.getini("filterwarnings")
    assert entries, "pyproject.toml has no [tool.pytest.ini_options] filterwarnings"
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        for entry in entries:
            warnings.filterwarnings(*parse_warning_filter(entry, escape=False))
        call()
    return [str(w.message) for w in seen]


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.__name__)
def test_a_deprecated_call_in_a_tritonforge_module_is_an_error(pytestconfig: pytest.Config, category: type) -> None:
    for name in ("tritonforge", "tritonforge.builders.onnx_common", "tritonforge.python_backends.cpu_llm.model"):
        caller = _caller(name)
        with pytest.raises(category, match="deprecated_api is deprecated"):
            _under_the_configured_filters(pytestconfig, lambda c=caller: c["call_deprecated"](category))


@pytest.mark.parametrize("category", CATEGORIES, ids=lambda c: c.__name__)
def test_deprecations_inside_dependencies_and_other_modules_stay_warnings(
    pytestconfig: pytest.Config, category: type
) -> None:
    ours = _caller("tritonforge.builders.onnx_common")
    assert _under_the_configured_filters(pytestconfig, lambda: ours["call_internal"](category)) == [
        "an internal deprecation"
    ]
    for name in ("torch.onnx", "tritonforge_plugin", "tests.unit.test_x"):
        theirs = _caller(name)
        assert _under_the_configured_filters(pytestconfig, lambda c=theirs: c["call_deprecated"](category)) == [
            "deprecated_api is deprecated"
        ]
