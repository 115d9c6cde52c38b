"""`prepare_gateway` says "needs the `gateway` extra" only when a module of that extra is missing: every ImportError
was reported so, which hid a broken install or an import error in the gateway's own modules (day-two audit)."""

from __future__ import annotations

import sys
import types

import pytest
import typer

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")

from tritonforge.cli_gateway import prepare_gateway


def _prepare() -> None:
    prepare_gateway("127.0.0.1", None, None, ["embeddings:minilm=embed"], None, True)


def test_a_missing_module_of_the_gateway_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn: ModuleNotFoundError, name "uvicorn"
    with pytest.raises(typer.Exit) as ended:
        _prepare()
    assert ended.value.exit_code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert 'the gateway needs the `gateway` extra (uvicorn missing): pip install "tritonforge[gateway]"' in err


def test_any_other_import_error_is_shown_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    # a gateway module without a name it should have: an ImportError, not a missing extra
    monkeypatch.setitem(sys.modules, "tritonforge.gateway.auth", types.ModuleType("tritonforge.gateway.auth"))
    with pytest.raises(ImportError, match=r"cannot import name '\w+' from 'tritonforge.gateway.auth'") as raised:
        _prepare()
    assert not isinstance(raised.value, ModuleNotFoundError)


def test_a_missing_module_outside_the_extra_is_shown_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tritonforge.gateway.splits", None)
    with pytest.raises(ModuleNotFoundError) as raised:
        _prepare()
    assert raised.value.name == "tritonforge.gateway.splits"
