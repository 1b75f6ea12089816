"""pybridge._core._rcall: the entry point R calls jobs through."""

import sys
import types
import warnings

import pytest

from pybridge._core import _rcall, settings


def test_call_sets_verbosity_for_the_call_and_returns_pybridge_warnings(monkeypatch):
    mod = types.ModuleType("pybridge._rcall_fixture")
    seen = {}

    def job(x):
        seen["verbosity"] = settings.verbosity
        warnings.warn(f"type {x!r} has 3 cells", UserWarning)
        return x * 2

    mod.job = job
    monkeypatch.setitem(sys.modules, "pybridge._rcall_fixture", mod)
    monkeypatch.setattr(_rcall, "_PKG", "")  # the fixture is not under the package directory
    before = settings.verbosity
    out, warns = _rcall.call("_rcall_fixture", "job", {"x": 2}, 1)
    assert out == 4 and seen["verbosity"] == 1 and settings.verbosity == before
    assert warns == ["type 2 has 3 cells"]
    # a second call warns again (R users expect one warning per call)
    assert _rcall.call("_rcall_fixture", "job", {"x": 2}, 2)[1] == ["type 2 has 3 cells"]


def test_call_lets_exceptions_through_and_restores_verbosity():
    before = settings.verbosity
    with pytest.raises(ValueError, match="at least 1"):
        _rcall.call("_core", "check_epochs", {"name": "max_epochs", "value": 0}, 1)
    assert settings.verbosity == before


def test_notes_logged_during_the_call_use_the_callers_names(capsys):
    _rcall.call("_core", "clamp_n_top", {"name": "n_top_genes", "value": 2000, "n_available": 300}, 2,
                {"n_top_genes": "nfeatures"})
    err = capsys.readouterr().err
    assert "nfeatures=2000 is more than the 300 genes there are" in err and "n_top_genes" not in err
    # the filter is gone after the call
    _rcall.call("_core", "clamp_n_top", {"name": "n_top_genes", "value": 2000, "n_available": 300}, 2)
    assert "n_top_genes=2000" in capsys.readouterr().err
    assert _rcall.rename("reference_layer and reference_layer_x", {"reference_layer": "reference.layer"}) == \
        "reference.layer and reference_layer_x"
