"""pybridge.tl.deconvolve, the dispatcher R calls: routing, key names, and the checks shared by
both methods (bad input gives clear errors and leaves the objects untouched)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from deconv_truth import lymph_data

from pybridge.tl import deconvolve, nnls


@pytest.fixture(scope="module")
def lymph():
    return lymph_data()


def _state(a):
    return (set(a.obsm.keys()), set(a.uns.keys()), set(a.varm.keys()), a.X.copy())


def _same_state(a, state):
    keys_obsm, keys_uns, keys_varm, x = state
    return (set(a.obsm.keys()) == keys_obsm and set(a.uns.keys()) == keys_uns
            and set(a.varm.keys()) == keys_varm and (a.X != x).nnz == 0)


def test_no_shared_genes(lymph):
    ref, vis, _ = lymph
    vis = vis.copy()
    vis.var_names = [f"ENSG{i:011d}" for i in range(vis.n_vars)]
    state = _state(vis)
    with pytest.raises(ValueError, match=r"share only 0 genes.*Ensembl"):
        deconvolve(vis, ref, labels_key="cell_type", method="nnls")
    assert _same_state(vis, state)


def test_too_few_shared_genes(lymph):
    ref, vis, genes = lymph
    keep = genes[:20] + [g for g in vis.var_names if g not in set(ref.var_names)][:300]
    small = vis[:, keep].copy()
    state = _state(small)
    with pytest.raises(ValueError, match="share only 20 genes"):
        deconvolve(small, ref, labels_key="cell_type", method="cell2location", max_epochs=5)
    assert _same_state(small, state)


def test_missing_labels_lists_columns(lymph):
    ref, vis, _ = lymph
    vis = vis.copy()
    state = _state(vis)
    with pytest.raises(KeyError, match=r"'celltype'.*cell_type"):
        deconvolve(vis, ref, labels_key="celltype", method="nnls")
    with pytest.raises(ValueError, match="labels_key is required.*cell_type"):
        deconvolve(vis, ref, method="nnls")
    assert _same_state(vis, state)


def test_spatial_not_counts(lymph):
    ref, vis, _ = lymph
    vis = vis.copy()
    vis.layers["counts"] = vis.X.copy()
    vis.X = sp.csr_matrix(np.log1p(vis.X.toarray()))
    state = _state(vis)
    with pytest.raises(ValueError, match="spatial X contains non-integer.*counts"):
        deconvolve(vis, ref, labels_key="cell_type", method="nnls")
    assert _same_state(vis, state)
    deconvolve(vis, ref, labels_key="cell_type", method="nnls", layer="counts")  # the fix works
    assert "nnls_mean" in vis.obsm  # key_added defaults to the method's name


def test_small_cell_type_warns_by_name(lymph):
    ref, vis, _ = lymph
    lab = ref.obs["cell_type"].astype(str)
    drop = np.flatnonzero(lab.to_numpy() == "DC")[3:]
    small = ref[np.setdiff1d(np.arange(ref.n_obs), drop)].copy()
    with pytest.warns(UserWarning, match=r"fewer than 5 cells: 'DC' \(3 cells\)"):
        deconvolve(vis.copy(), small, labels_key="cell_type", method="nnls")


def test_other_bad_arguments(lymph):
    ref, vis, _ = lymph
    with pytest.raises(ValueError, match="method must be one of"):
        deconvolve(vis, ref, labels_key="cell_type", method="rctd")
    with pytest.raises(TypeError, match="signatures must be a pandas DataFrame"):
        deconvolve(vis, signatures=np.ones((5, 3)), method="nnls")
    with pytest.raises(ValueError, match="pass a reference"):
        deconvolve(vis, method="nnls")
    with pytest.raises(FileNotFoundError, match="saved cell2location RegressionModel"):
        deconvolve(vis, reference_model_path="/nonexistent/model")


def test_dispatcher_routes_to_the_method_and_names_keys_after_it(lymph):
    ref, vis, _ = lymph
    a, b, c = vis.copy(), vis.copy(), vis.copy()
    out = deconvolve(a, ref, labels_key="cell_type", method="nnls")
    nnls(b, ref, labels_key="cell_type")
    pd.testing.assert_frame_equal(a.obsm["nnls_mean"], b.obsm["nnls_mean"])
    assert out["method"] == "nnls" and "nnls" in a.uns and "cell2location" not in a.uns
    deconvolve(c, ref, labels_key="cell_type", method="nnls", key_added="quick", device="cpu")
    assert {"quick_mean", "quick_proportions"} <= set(c.obsm.keys()) and "quick_q05" not in c.obsm
    # device is only checked for nnls (scipy on the CPU)
    with pytest.raises(ValueError, match="device must be one of"):
        deconvolve(vis.copy(), ref, labels_key="cell_type", method="nnls", device="tpu")


@pytest.mark.parametrize("kw,msg", [
    ({"max_epochs": 0}, "max_epochs must be at least 1, got 0"),
    ({"max_epochs": -1}, "max_epochs must be at least 1, got -1"),
    ({"max_epochs": 2.5}, "max_epochs must be a whole number"),
    ({"reference_max_epochs": 0}, "reference_max_epochs must be at least 1"),
    ({"num_samples": 0}, "num_samples must be at least 1"),
    ({"n_cells_per_location": 0}, "n_cells_per_location must be greater than 0"),
    ({"detection_alpha": -1}, "detection_alpha must be greater than 0"),
])
def test_numbers_out_of_range_fail_before_any_work(lymph, kw, msg, monkeypatch):
    """Epochs <= 0 and other out-of-range numbers are errors before the reference is touched."""
    import pybridge.tl._cell2location as c2l

    def no_work(*a, **k):
        raise AssertionError("work started before the checks")

    monkeypatch.setattr(c2l, "filter_reference_genes", no_work)
    ref, vis, _ = lymph
    v = vis.copy()
    state = _state(v)
    with pytest.raises(ValueError, match=msg):
        deconvolve(v, ref, labels_key="cell_type", device="cpu", **kw)
    assert _same_state(v, state)
