"""pybridge.tl.deconvolve on real lymph-node data: NNLS and cell2location, ground truth, bad input.

Ground truth: the reference's cells are split in two halves per cell type; pseudo-spots are
sums of known numbers of cells of known types from one half, and are deconvolved with the
other half as reference. Proportions are compared with the truth (Pearson r, RMSE).
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_path

from pybridge.tl import deconvolve

# Floors measured on this data (see benchmarks/bench_deconvolve.py for the figures), with margin.
NNLS_R_FLOOR, NNLS_RMSE_CEIL = 0.85, 0.11
C2L_R_FLOOR, C2L_RMSE_CEIL = 0.85, 0.11
TRUTH_GENES, TRUTH_SPOTS = 1000, 100
# Short training for CI on CPU (the recommended 30,000 epochs take hours there).
C2L_EPOCHS, C2L_LR, REF_EPOCHS = 500, 0.02, 250


# ----------------------------------------------------------------------------- data


def pseudo_spots(ref, labels_key, genes, *, n_spots=200, seed=0, max_types=4, max_cells=8, depth=1.0):
    """Pseudo-spots from half of ``ref``'s cells; returns (spatial, other half, truth, cells per spot).

    Each spot holds 1..``max_types`` cell types, each with 1..``max_cells`` cells drawn from the
    spot half; its counts are the sum of those cells' counts (binomially thinned to ``depth``).
    ``truth`` holds the cell proportions (spots x types).
    """
    rng = np.random.default_rng(seed)
    lab = ref.obs[labels_key].astype(str).to_numpy()
    types = np.unique(lab)
    spot_idx, ref_idx = [], []
    for t in types:
        idx = rng.permutation(np.flatnonzero(lab == t))
        h = len(idx) // 2
        spot_idx.append(idx[:h])
        ref_idx.extend(idx[h:])
    x = ref[:, genes].X
    x = x.tocsr() if sp.issparse(x) else sp.csr_matrix(x)
    counts = np.zeros((n_spots, len(genes)))
    ncell = np.zeros((n_spots, len(types)))
    for s in range(n_spots):
        for j in rng.choice(len(types), size=rng.integers(1, max_types + 1), replace=False):
            n = rng.integers(1, max_cells + 1)
            ncell[s, j] = n
            counts[s] += np.asarray(x[rng.choice(spot_idx[j], size=n, replace=True)].sum(0)).ravel()
    if depth < 1:
        counts = rng.binomial(counts.astype(np.int64), depth)
    names = [f"spot{i}" for i in range(n_spots)]
    spatial = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=pd.DataFrame(index=names),
                         var=pd.DataFrame(index=list(genes)))
    truth = pd.DataFrame(ncell / ncell.sum(1, keepdims=True), index=names, columns=types)
    return spatial, ref[np.sort(ref_idx)].copy(), truth, ncell.sum(1)


def score(estimate: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float]:
    """Pearson r and RMSE of proportions (all spots x types) against the truth."""
    e = estimate.loc[truth.index, truth.columns].to_numpy().ravel()
    t = truth.to_numpy().ravel()
    return float(np.corrcoef(e, t)[0, 1]), float(np.sqrt(np.mean((e - t) ** 2)))


def b_marker_genes(ref, genes, n=10):
    """The ``n`` shared genes most specific to B cells in the reference (normalised means).

    The classic markers (MS4A1, CD79A, CR2) are not among this Visium panel's 2,000 genes.
    """
    x = ref[:, genes].X.toarray()
    x = x / x.sum(1, keepdims=True) * 1e4
    means = pd.DataFrame(x, columns=genes).groupby(ref.obs["cell_type"].astype(str).to_numpy()).mean()
    spec = (means.loc["B"] + 0.1) / (means.drop(index="B").max() + 0.1)
    return list(spec.sort_values(ascending=False).index[:n])


@pytest.fixture(scope="module")
def lymph():
    ref = ad.read_h5ad(shared_path("lymphnode_reference.h5ad"))
    vis = ad.read_h5ad(shared_path("lymphnode_visium.h5ad"))
    genes = [g for g in ref.var_names if g in set(vis.var_names)]
    return ref, vis, genes


def variable_genes(ref, n):
    """The ``n`` most variable reference genes (labels not used).

    Cell Ranger's rule (as scanpy's ``flavor="cell_ranger"``): dispersion (variance / mean) of
    counts per 10,000, normalised within 20 bins of mean expression. Written with NumPy so the
    test does not start numba's OpenMP pool, which resets torch to all cores.
    """
    x = ref.X.toarray() if sp.issparse(ref.X) else np.asarray(ref.X)
    x = x / x.sum(1, keepdims=True) * 1e4
    mean, var = x.mean(0), x.var(0, ddof=1)
    ok = mean > 0
    disp = np.full(mean.shape, -np.inf)
    disp[ok] = np.log(var[ok] / mean[ok])
    bins = pd.qcut(pd.Series(mean), np.r_[np.arange(0, 100, 5), 100] / 100, duplicates="drop", labels=False)
    frame = pd.DataFrame({"disp": disp, "bin": bins})
    g = frame[ok].groupby("bin")["disp"]
    med = g.transform("median")
    mad = g.transform(lambda d: np.median(np.abs(d - np.median(d)))).replace(0, np.nan)
    norm = pd.Series(-np.inf, index=frame.index)
    norm[ok] = ((frame.loc[ok, "disp"] - med) / mad).fillna(0).to_numpy()
    top = np.argsort(-norm.to_numpy(), kind="stable")[:n]
    return list(ref.var_names[np.sort(top)])


@pytest.fixture(scope="module")
def truth_data(lymph):
    # Pseudo-spots measure the 1,000 most variable reference genes. (On the 558 genes the
    # reference shares with the Visium panel, which lacks the classic markers, both methods
    # reach only r ~ 0.75; see benchmarks/bench_deconvolve.py.)
    ref = lymph[0]
    return pseudo_spots(ref, "cell_type", variable_genes(ref, TRUTH_GENES), n_spots=TRUTH_SPOTS, seed=0)


def _state(a):
    return (set(a.obsm.keys()), set(a.uns.keys()), set(a.varm.keys()), a.X.copy())


def _same_state(a, state):
    keys_obsm, keys_uns, keys_varm, x = state
    return (set(a.obsm.keys()) == keys_obsm and set(a.uns.keys()) == keys_uns
            and set(a.varm.keys()) == keys_varm and (a.X != x).nnz == 0)


# ------------------------------------------------------------------------------ nnls


def test_nnls_real_visium(lymph):
    ref, vis, genes = lymph
    vis, ref = vis.copy(), ref.copy()
    x0, rx0 = vis.X.copy(), ref.X.copy()
    out = deconvolve(vis, ref, labels_key="cell_type", method="nnls", key_added="nnls")
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


def test_nnls_ground_truth(truth_data):
    spatial, half, truth, ncells = truth_data
    spatial = spatial.copy()
    deconvolve(spatial, half, labels_key="cell_type", method="nnls", n_cells_per_location=float(ncells.mean()))
    r, rmse = score(spatial.obsm["cell2location_proportions"], truth)
    print(f"nnls ground truth: r = {r:.3f}, RMSE = {rmse:.3f}")
    assert r >= NNLS_R_FLOOR and rmse <= NNLS_RMSE_CEIL
    # abundances track the true cell numbers too (scaled to the mean count)
    est_total = spatial.obsm["cell2location_mean"].sum(1).to_numpy()
    assert np.corrcoef(est_total, ncells)[0, 1] > 0.8


# ------------------------------------------------------------------------- bad input


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
    assert "cell2location_mean" in vis.obsm


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


def test_nnls_signature_reuse_matches(lymph):
    ref, vis, _ = lymph
    a, b = vis.copy(), vis.copy()
    deconvolve(a, ref, labels_key="cell_type", method="nnls")
    deconvolve(b, signatures=a.uns["cell2location"]["signatures"], method="nnls")
    pd.testing.assert_frame_equal(a.obsm["cell2location_mean"], b.obsm["cell2location_mean"])
    assert b.uns["cell2location"]["params"]["signatures_source"] == "signatures"


# --------------------------------------------------------------------- cell2location


@pytest.mark.slow
def test_cell2location_ground_truth_and_reuse(truth_data, tmp_path):
    spatial, half, truth, ncells = truth_data
    spatial, half = spatial.copy(), half.copy()
    hx = half.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deconvolve(spatial, half, labels_key="cell_type", n_cells_per_location=float(ncells.mean()),
                   reference_max_epochs=REF_EPOCHS, max_epochs=C2L_EPOCHS, lr=C2L_LR, reference_genes="shared",
                   model_kwargs={"A_factors_per_location": 3, "B_groups_per_location": 3},
                   num_samples=100, save_reference_model=str(tmp_path / "ref"), device="cpu")
    r, rmse = score(spatial.obsm["cell2location_proportions"], truth)
    print(f"cell2location ground truth: r = {r:.3f}, RMSE = {rmse:.3f} ({C2L_EPOCHS} epochs)")
    assert r >= C2L_R_FLOOR and rmse <= C2L_RMSE_CEIL
    mean, q05, q95 = (spatial.obsm[f"cell2location_{q}"] for q in ("mean", "q05", "q95"))
    assert (q05.to_numpy() >= 0).all()
    assert (q05.to_numpy() <= mean.to_numpy() + 1e-6).all() and (mean.to_numpy() <= q95.to_numpy() + 1e-6).all()
    totals = mean.sum(1)
    assert 0.5 * ncells.mean() < totals.mean() < 1.5 * ncells.mean()
    assert np.corrcoef(totals, ncells)[0, 1] > 0.5  # more cells -> more estimated cells
    u = spatial.uns["cell2location"]
    assert u["params"]["max_epochs"] == C2L_EPOCHS and u["params"]["device"] == "cpu"
    assert len(u["history"]["elbo_train"]) == C2L_EPOCHS
    assert u["history"]["elbo_train"][-1] < u["history"]["elbo_train"][0]
    assert 0 < u["n_genes"] <= len(truth_data[0].var_names)
    sig = half.varm["cell2location_signatures"]
    assert list(sig.columns) == list(truth.columns) and (half.X != hx).nnz == 0
    assert sig.dropna().index.tolist() == list(u["genes"])  # reference_genes="shared"
    # reuse: a saved RegressionModel gives the same signatures (fresh posterior draws)
    again = truth_data[0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deconvolve(again, reference_model_path=str(tmp_path / "ref"), max_epochs=20, num_samples=100,
                   device="cpu")
    s1 = u["signatures"]
    s2 = again.uns["cell2location"]["signatures"].loc[s1.index, s1.columns]
    assert np.corrcoef(np.log1p(s1.to_numpy().ravel()), np.log1p(s2.to_numpy().ravel()))[0, 1] > 0.99
    assert again.uns["cell2location"]["params"]["signatures_source"] == "reference_model"


@pytest.mark.slow
def test_cell2location_reference_on_all_genes_maps_another_panel(lymph, truth_data):
    """reference_genes="all" (the default): signatures for every gene passing the filter, so
    a reference fitted with one spatial panel maps another panel without refitting."""
    vis = lymph[1]
    spatial, half = truth_data[0].copy(), truth_data[1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = deconvolve(spatial, half, labels_key="cell_type", reference_max_epochs=30, max_epochs=30,
                         num_samples=20, device="cpu")
    sig = out["signatures"]
    assert len(sig) == out["n_reference_genes_after_filter"] > 3 * out["n_genes"]
    assert half.varm["cell2location_signatures"].notna().all(axis=1).sum() == len(sig)
    assert (sig.to_numpy() >= 0).all()
    v = vis.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deconvolve(v, signatures=sig, max_epochs=30, num_samples=20, device="cpu")
    used = v.uns["cell2location"]["genes"]
    assert len(set(used) - set(spatial.var_names)) > 100  # genes the first panel did not have
    assert v.obsm["cell2location_mean"].shape == (v.n_obs, sig.shape[1])
