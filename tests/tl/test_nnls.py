"""pybridge.tl.nnls on real lymph-node data: B cells where B transcripts are, ground truth, reuse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from deconv_truth import b_marker_genes, lymph_data, score, truth_data

from pybridge.tl import nnls

# Floors measured on this data (see benchmarks/bench_deconvolve.py for the figures), with margin.
NNLS_R_FLOOR, NNLS_RMSE_CEIL = 0.85, 0.11


@pytest.fixture(scope="module")
def lymph():
    return lymph_data()


@pytest.fixture(scope="module")
def truth():
    return truth_data(lymph_data()[0])


def test_nnls_real_visium(lymph):
    ref, vis, genes = lymph
    vis, ref = vis.copy(), ref.copy()
    x0, rx0 = vis.X.copy(), ref.X.copy()
    out = nnls(vis, ref, labels_key="cell_type")
    types = sorted(ref.obs["cell_type"].astype(str).unique())
    mean, prop = vis.obsm["nnls_mean"], vis.obsm["nnls_proportions"]
    assert list(mean.columns) == types and list(mean.index) == list(vis.obs_names)
    assert "nnls_q05" not in vis.obsm  # point estimates only
    assert (mean.to_numpy() >= 0).all()
    np.testing.assert_allclose(mean.sum(1).mean(), 30, rtol=1e-6)  # scaled to n_cells_per_location
    np.testing.assert_allclose(prop.sum(1)[mean.sum(1) > 0], 1, rtol=1e-6)
    assert out["n_genes"] >= 500 and out["method"] == "nnls"
    assert vis.uns["nnls"]["params"]["n_cells_per_location"] == 30
    # signatures = mean raw counts per cell of each type, NaN for unused genes
    sig = ref.varm["nnls_signatures"]
    g = genes[0]
    b = (ref.obs["cell_type"] == "B").to_numpy()
    np.testing.assert_allclose(sig.loc[g, "B"], ref[b, g].X.toarray().mean(), rtol=1e-5)
    assert sig.drop(index=genes).isna().all().all()
    # inputs untouched
    assert (vis.X != x0).nnz == 0 and (ref.X != rx0).nnz == 0
    # spots rich in B-specific transcripts get more B cells than spots poor in them
    markers = b_marker_genes(ref, genes)
    score_b = np.asarray(vis[:, markers].X.sum(1)).ravel() / np.asarray(vis.X.sum(1)).ravel()
    hi, lo = score_b >= np.quantile(score_b, 0.8), score_b <= np.quantile(score_b, 0.2)
    assert mean["B"][hi].mean() > 1.5 * mean["B"][lo].mean()


def test_nnls_ground_truth(truth):
    spatial, half, truth, ncells = truth
    spatial = spatial.copy()
    nnls(spatial, half, labels_key="cell_type", n_cells_per_location=float(ncells.mean()))
    r, rmse = score(spatial.obsm["nnls_proportions"], truth)
    print(f"nnls ground truth: r = {r:.3f}, RMSE = {rmse:.3f}")
    assert r >= NNLS_R_FLOOR and rmse <= NNLS_RMSE_CEIL
    # abundances track the true cell numbers too (scaled to the mean count)
    est_total = spatial.obsm["nnls_mean"].sum(1).to_numpy()
    assert np.corrcoef(est_total, ncells)[0, 1] > 0.8


def test_nnls_signature_reuse_matches(lymph):
    ref, vis, _ = lymph
    a, b = vis.copy(), vis.copy()
    nnls(a, ref, labels_key="cell_type")
    nnls(b, signatures=a.uns["nnls"]["signatures"])
    pd.testing.assert_frame_equal(a.obsm["nnls_mean"], b.obsm["nnls_mean"])
    assert b.uns["nnls"]["params"]["signatures_source"] == "signatures"
