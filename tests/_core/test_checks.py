"""pybridge._core._checks: the input checks every job shares."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from pybridge._core import (check_counts, check_epochs, check_number, check_obs_key, check_obs_level, clamp_n_top,
                            get_matrix, shared_genes)


def test_check_counts_names_the_problem():
    check_counts(sp.csr_matrix(np.array([[0, 1], [2, 3]], dtype=float)))
    with pytest.raises(ValueError, match="NaN"):
        check_counts(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"negative values \(min -1\)"):
        check_counts(np.array([[-1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"non-integer values \(e.g. 0.5\).*log-normalised.*layer='counts'"):
        check_counts(np.array([[0.5, 1.0]]), hint="pass layer='counts'")


def test_obs_and_layer_errors_list_what_exists():
    a = ad.AnnData(np.zeros((3, 2)), obs={"stim": ["a", "b", "a"]})
    check_obs_key(a, "stim")
    with pytest.raises(KeyError, match="Columns that exist: stim"):
        check_obs_key(a, "batch")
    with pytest.raises(ValueError, match="Values that exist: a, b"):
        check_obs_level(a, "stim", "c")
    a.layers["counts"] = a.X.copy()
    assert get_matrix(a, "counts") is a.layers["counts"]
    with pytest.raises(KeyError, match="Layers that exist: counts"):
        get_matrix(a, "spliced")


def test_shared_genes_keeps_reference_order_and_shows_both_examples():
    assert shared_genes(iter(["B", "A", "C"]), ["C", "X", "A"], min_shared=1) == ["C", "A"]
    with pytest.raises(ValueError) as e:
        shared_genes(iter(["CD3E", "MS4A1"]), ["ENSG1", "ENSG2"], min_shared=1)
    # the query's example used to be empty: the iterator was consumed by set() first
    assert "query starts CD3E, MS4A1; reference starts ENSG1, ENSG2" in str(e.value)


@pytest.mark.parametrize("value, msg", [(-1, "at least 1"), (0, "at least 1"), (1.5, "whole number"),
                                        (float("nan"), "finite"), ("10", "must be a number"),
                                        (True, "must be a number")])
def test_check_epochs_rejects_before_any_work(value, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        check_epochs("max_epochs", value)


def test_check_number_bounds_and_none():
    assert check_epochs("max_epochs", None) is None
    assert check_epochs("max_epochs", 0, allow_zero=True) == 0
    assert check_epochs("max_epochs", 10.0) == 10 and isinstance(check_epochs("max_epochs", 10.0), int)
    assert check_number("lr", 0.01, minimum=0, exclusive_minimum=True) == 0.01
    with pytest.raises(ValueError, match="greater than 0"):
        check_number("lr", 0, minimum=0, exclusive_minimum=True)
    with pytest.raises(ValueError, match="at most 1"):
        check_number("threshold", 1.5, maximum=1)


def test_clamp_n_top_takes_all_genes_with_a_note(caplog):
    import logging

    logging.getLogger("pybridge").propagate = True  # let caplog see it for this test
    try:
        with caplog.at_level(logging.INFO, logger="pybridge"):
            assert clamp_n_top("n_top_genes", 2000, 1267) == 1267
        assert "n_top_genes=2000 is more than the 1267 genes there are" in caplog.text
    finally:
        logging.getLogger("pybridge").propagate = False
    assert clamp_n_top("n_top_genes", 500, 1267) == 500
    with pytest.raises(ValueError):
        clamp_n_top("n_top_genes", 0, 1267)
