"""tl.augur on real data (Kang IFN-beta): every type reported, monocytes respond most; counts
checks; Augur's loess variable-gene selection against the R method."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from pybridge import tl


@pytest.fixture(scope="module")
def kang_augur():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    x0 = a.X.copy()
    # fewer subsamples / trees than Augur's defaults (50 / 100) to keep the test short
    table = tl.augur(a, "stim", "CTRL", cell_type_key="seurat_annotations", n_subsamples=8, n_estimators=50,
                     random_state=0)
    return a, x0, table


@pytest.fixture
def kang_small():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    return a[a.obs["seurat_annotations"].isin(["CD14 Mono", "B"])].copy()


@pytest.mark.slow
def test_augur_kang_every_type_reported_cd14_top3(kang_augur):
    a, x0, table = kang_augur
    print("\nAugur AUC ranking (Kang IFN-beta):\n", table[["cell_type", "auc", "rank", "n_control",
                                                            "n_perturbed", "status"]].to_string())
    types = set(a.obs["seurat_annotations"].astype(str))
    assert set(table["cell_type"]) == types and len(table) == 13
    counts = a.obs.groupby(["seurat_annotations", "stim"], observed=False).size().unstack()
    for _, r in table.iterrows():
        n_c, n_s = counts.loc[r.cell_type, "CTRL"], counts.loc[r.cell_type, "STIM"]
        assert (r.n_control, r.n_perturbed) == (n_c, n_s)
        if min(n_c, n_s) >= 20:
            assert r.status == "ok" and 0.5 <= r.auc <= 1.0
        else:  # Eryth (0 CTRL), pDC (4), Mk (13 STIM), B Activated (19 CTRL) cannot be subsampled
            assert np.isnan(r.auc) and r.status.startswith("skipped: fewer than 20 cells per condition")
    scored = table.dropna(subset=["auc"])
    assert len(scored) == 9
    top3 = list(scored.sort_values("auc", ascending=False)["cell_type"][:3])
    assert "CD14 Mono" in top3, top3
    # monocytes respond more than lymphocytes (known for IFN-beta)
    auc = dict(zip(table.cell_type, table.auc, strict=True))
    assert auc["CD14 Mono"] > max(auc["CD4 Naive T"], auc["CD4 Memory T"], auc["NK"])


@pytest.mark.slow
def test_augur_writes_obs_uns_and_leaves_x(kang_augur):
    a, x0, table = kang_augur
    assert (a.X != x0).nnz == 0  # counts untouched
    per_cell = a.obs["augur_score"]  # pertpy's name
    auc = dict(zip(table.cell_type, table.auc, strict=True))
    expect = a.obs["seurat_annotations"].astype(str).map(auc)
    np.testing.assert_allclose(per_cell.to_numpy(), expect.to_numpy(), equal_nan=True)
    p = a.uns["augur"]["params"]
    assert p["method"] == "augur" and p["perturbed"] == "STIM" and p["n_subsamples"] == 8
    assert a.uns["augur"]["table"].equals(table)


def test_augur_skips_small_types_without_crash(kang_small):
    b = kang_small[~((kang_small.obs["seurat_annotations"] == "B") & (kang_small.obs["stim"] == "CTRL"))
                   | (np.arange(kang_small.n_obs) % 10 == 0)].copy()
    t = tl.augur(b, "stim", "CTRL", cell_type_key="seurat_annotations", n_subsamples=2, n_estimators=10)
    row = t.set_index("cell_type").loc["B"]
    assert np.isnan(row.auc) and "skipped: fewer than 20 cells per condition" in row.status
    assert t.set_index("cell_type").loc["CD14 Mono", "status"] == "ok"
    assert np.isnan(b.obs.loc[b.obs["seurat_annotations"] == "B", "augur_score"]).all()


# R Augur's select_variance (neurorestore/Augur, R/select_variance.R) from the per-gene means and
# standard deviations on: the loess fits (stats::loess), the Cox test (lmtest::coxtest) and the
# quantile rule, verbatim. Means / sds come from Python so that floating-point ties at the 1 % / 99 %
# quantiles (many genes seen in one cell share one cv) cannot make the two sides differ.
_R_SELECT_VARIANCE = r"""
args <- commandArgs(TRUE)
d <- read.table(args[1], header = TRUE)
var_quantile <- as.numeric(args[3]); filter_negative_residuals <- as.logical(args[4])
means <- setNames(d$mean, d$gene); sds <- setNames(d$sd, d$gene)
means <- means[sds > 0]; sds <- sds[sds > 0]
cvs = means / sds
lower = quantile(cvs, 0.01)
upper = quantile(cvs, 0.99)
keep = dplyr::between(cvs, lower, upper)
cv0 = cvs[keep]
mean0 = means[keep]
if (any(mean0 < 0)) {
  model = loess(cv0 ~ mean0)
} else {
  fit1 = loess(cv0 ~ mean0)
  fit2 = loess(cv0 ~ log(mean0))
  cox = lmtest::coxtest(fit1, fit2)
  probs = cox$`Pr(>|z|)`
  if (probs[1] < probs[2]) model = fit1 else model = fit2
}
genes = names(means)[keep]
residuals = setNames(model$residuals, genes)
if (filter_negative_residuals) {
  genes = names(residuals)[residuals > 0]
} else {
  genes = names(residuals)[residuals > quantile(residuals, var_quantile)]
}
writeLines(genes, args[2])
"""


@pytest.mark.slow
@pytest.mark.needs_r
def test_select_variance_matches_r_augur(tmp_path):
    """Augur's variable genes (loess of mean/sd on mean or log mean, Cox test, residual quantile) are
    exactly R Augur's on four Kang cell types and three settings."""
    import shutil
    import subprocess

    import scipy.sparse as sp

    from pybridge.tl._augur import _mean_sd, _select_from_stats, select_variance
    from pybridge.tl._perturbation_utils import lognorm

    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not found: the R reference cannot run")
    script = tmp_path / "select_variance.R"
    script.write_text(_R_SELECT_VARIANCE)
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    x = lognorm(a.X)
    checked = 0
    for t, q, neg in [("CD14 Mono", 0.5, False), ("B", 0.5, False), ("NK", 0.25, False), ("DC", 0.5, True)]:
        xt = sp.csr_matrix(x[(a.obs["seurat_annotations"] == t).to_numpy()], dtype=np.float64)
        n = xt.shape[0]
        mean, sd = _mean_sd(xt)
        ours = _select_from_stats(mean, sd, var_quantile=q, span=0.75, filter_negative_residuals=neg)
        np.testing.assert_array_equal(ours, select_variance(xt, var_quantile=q, filter_negative_residuals=neg))
        stats = tmp_path / f"stats_{checked}.txt"
        with open(stats, "w") as fh:
            fh.write("gene mean sd\n")
            for i in range(mean.size):
                fh.write(f"g{i} {float(mean[i])!r} {float(sd[i])!r}\n")  # NumPy 2: repr = np.float64(x)
        out = tmp_path / f"genes_{checked}.txt"
        subprocess.run(["Rscript", str(script), str(stats), str(out), str(q), "TRUE" if neg else "FALSE"],
                       check=True, capture_output=True)
        ref = sorted(int(g[1:]) for g in out.read_text().split())
        print(f"{t}: {n} cells, R Augur selects {len(ref)} genes, pybridge {ours.size}")
        assert ours.tolist() == ref, (t, len(set(ours) ^ set(ref)))
        assert 0.1 * mean.size < ours.size < 0.6 * mean.size
        checked += 1


def test_augur_checks_counts_before_any_work(kang_small):
    """NaN, negative and non-integer values are errors (one NaN used to change every AUC)."""
    from pybridge.tl._perturbation_utils import lognorm

    obs0 = kang_small.obs.copy()
    bad = kang_small.copy()
    bad.X = bad.X.astype(np.float32)
    bad.X.data[5] = np.nan
    with pytest.raises(ValueError, match="X contains NaN or infinite values; counts are needed"):
        tl.augur(bad, "stim", "CTRL", cell_type_key="seurat_annotations")
    bad.X.data[5] = -1
    with pytest.raises(ValueError, match=r"X contains negative values \(min -1\)"):
        tl.augur(bad, "stim", "CTRL", cell_type_key="seurat_annotations")
    logn = kang_small.copy()
    logn.layers["logcounts"] = lognorm(logn.X)
    with pytest.raises(ValueError, match="layer 'logcounts' contains non-integer values.*Augur log-normalises"):
        tl.augur(logn, "stim", "CTRL", cell_type_key="seurat_annotations", layer="logcounts")
    with pytest.raises(ValueError, match="n_subsamples must be at least 1, got 0"):
        tl.augur(kang_small, "stim", "CTRL", n_subsamples=0)
    with pytest.raises(ValueError, match="var_quantile must be at most 1"):
        tl.augur(kang_small, "stim", "CTRL", var_quantile=2)
    for a in (bad, logn, kang_small):
        assert "augur" not in a.uns and "augur_score" not in a.obs
    pd.testing.assert_frame_equal(kang_small.obs, obs0)


def test_augur_warns_when_nothing_scorable(kang_small):
    with pytest.warns(UserWarning, match=r"augur: no cell type could be scored \(B: skipped: fewer than 5000"):
        t = tl.augur(kang_small, "stim", "CTRL", cell_type_key="seurat_annotations", min_cells=5000)
    assert t["auc"].isna().all() and kang_small.obs["augur_score"].isna().all()


def test_augur_progress_lines_when_verbose(kang_small, capsys):
    kw = dict(cell_type_key="seurat_annotations", n_subsamples=3, n_estimators=5)
    tl.augur(kang_small, "stim", "CTRL", verbose=True, **kw)
    err = capsys.readouterr().err
    assert "augur: 2 of 2 cell types scorable, 6 subsample fits" in err
    assert "augur: subsample fits: 1/6 (16%)" in err
    tl.augur(kang_small, "stim", "CTRL", verbose=False, **kw)
    assert "subsample fits" not in capsys.readouterr().err
