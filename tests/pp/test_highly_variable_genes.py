"""pybridge.pp._highly_variable_genes: the vst against scanpy (Seurat parity: test-preprocess.R), the
scanpy flavours, the bare-matrix entry point, R's loess, clamping and errors."""

import shutil
import subprocess
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from pybridge import pp
from pybridge.pp._highly_variable_genes import loess_fitted, variable_genes
from pybridge.pp._normalization import log_normalize


def _tie_aware_set_check(ours_var, ref_var, n_top):
    """HVG sets equal, except among genes tied (to 1e-9) with the cut-off value.

    Tied genes (e.g. genes counted once in the data) are broken by gene order here, as R's
    order() in Seurat, while scanpy's quicksort breaks them arbitrarily.
    """
    a = set(ours_var.index[ours_var["highly_variable"]])
    b = set(ref_var.index[ref_var["highly_variable"]])
    assert len(a) == len(b) == n_top
    diff = a ^ b
    if diff:
        cut = np.sort(ref_var["variances_norm"].to_numpy())[::-1][n_top - 1]
        v = ref_var.loc[sorted(diff), "variances_norm"].to_numpy()
        assert np.allclose(v, cut, rtol=1e-9), f"HVG sets differ beyond ties: {sorted(diff)[:5]}"
    return len(a & b) / n_top


def test_hvg_match_scanpy(chain):
    ours, ref, n_top = chain["ours"].var, chain["ref"].var, chain["n_top"]
    overlap = _tie_aware_set_check(ours, ref, n_top)
    # measured: 0.9995 (kang, 2000); pbmc_3tech (500): 0.962 on NumPy 1, 0.942 on NumPy 2 (the rest
    # tie at the cut-off, and NumPy 2's argsort breaks those ties in scanpy differently)
    assert overlap >= 0.93
    for col in ("means", "variances", "variances_norm"):
        np.testing.assert_allclose(ours[col], ref[col], rtol=1e-9, atol=1e-12)
    r1, r2 = ours["highly_variable_rank"].to_numpy(), ref["highly_variable_rank"].to_numpy()
    both = ~np.isnan(r1) & ~np.isnan(r2)
    assert np.corrcoef(r1[both], r2[both])[0, 1] > 0.999


def test_hvg_batch_key_matches_scanpy(chain, ppdata):
    batch, _ = ppdata.datasets[chain["name"]]
    n_top = chain["n_top"]
    a = chain["raw"]
    ours = a.copy()
    ref = a.copy()
    if chain["name"] == "pbmc_3tech":
        # 3 small batches (290-480 cells): the loess of one batch is singular. scanpy stops with
        # skmisc's error; pybridge widens the span there (R's loess only warns) and says so.
        with pytest.raises(ValueError, match="singularit"):
            sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch)
        with pytest.warns(UserWarning, match=r"vst: .* in batch '.*' \(\d+ cells\).*used span=0\.\d"):
            pp.highly_variable_genes(ours, n_top_genes=n_top, batch_key=batch, device="cpu")
        nb = ours.var["highly_variable_nbatches"]
        assert ours.var["highly_variable"].sum() == n_top and nb.max() == 3
        assert (nb[ours.var["highly_variable"]] >= 1).all()
        return
    pp.highly_variable_genes(ours, n_top_genes=n_top, batch_key=batch, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n_top, batch_key=batch)
    np.testing.assert_allclose(ours.var["variances_norm"], ref.var["variances_norm"], rtol=1e-9)
    # per-batch ranks differ only among tied genes (stable order here, quicksort in scanpy)
    nb1, nb2 = ours.var["highly_variable_nbatches"].to_numpy(), ref.var["highly_variable_nbatches"].to_numpy()
    assert np.mean(nb1 != nb2) < 0.01
    a_set = set(ours.var_names[ours.var["highly_variable"]])
    b_set = set(ref.var_names[ref.var["highly_variable"]])
    assert len(a_set & b_set) / n_top >= 0.99


def test_variable_genes_is_highly_variable_genes(pbmc3_counts):
    """The bare-matrix entry point gives the AnnData function's table (same kernels), with batches too."""
    a = pbmc3_counts
    table = pp.highly_variable_genes(a, n_top_genes=300, inplace=False, device="cpu")
    assert table["highly_variable"].sum() == 300 and "highly_variable" not in a.var
    df = variable_genes(a.X, 300, var_names=a.var_names)
    pd.testing.assert_frame_equal(df, table)
    pos = variable_genes(a.X, 300)
    assert list(pos.index[:3]) == [0, 1, 2] and (pos["highly_variable"].to_numpy() == table["highly_variable"]).all()
    b = a.copy()
    b.obs["half"] = np.where(np.arange(b.n_obs) % 2, "x", "y")
    by = pp.highly_variable_genes(b, n_top_genes=300, batch_key="half", inplace=False, device="cpu")
    np.testing.assert_array_equal(variable_genes(a.X, 300, batch=b.obs["half"].to_numpy())["highly_variable"],
                                  by["highly_variable"])
    with pytest.raises(ValueError, match="batch has 3 values"):
        variable_genes(a.X, 300, batch=["a", "b", "c"])
    with pytest.raises(ValueError, match="non-integer"):
        variable_genes(log_normalize(a.X), 300)


def test_scanpy_flavours_are_scanpy(pbmc3_counts):
    """flavor='seurat' / 'cell_ranger' (log data) are scanpy's own, on an AnnData or a bare matrix."""
    logx = log_normalize(pbmc3_counts.X)
    for flavor in ("seurat", "cell_ranger"):
        ref = ad.AnnData(logx.copy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.highly_variable_genes(ref, n_top_genes=400, flavor=flavor)
        df = variable_genes(logx, 400, flavor=flavor)
        np.testing.assert_array_equal(df["highly_variable"].to_numpy(), ref.var["highly_variable"].to_numpy())
        ours = ad.AnnData(logx.copy())
        pp.highly_variable_genes(ours, n_top_genes=400, flavor=flavor, device="cpu")
        np.testing.assert_array_equal(ours.var["highly_variable"], ref.var["highly_variable"])
    with pytest.raises(ValueError, match="flavor='pearson_residuals' is not supported"):
        variable_genes(logx, 10, flavor="pearson_residuals")


def test_n_top_genes_clamps_with_a_note(pbmc3_counts, capsys):
    """More genes than there are: all genes, with a note (Seurat's FindVariableFeatures does the same)."""
    a = pbmc3_counts[:, :150].copy()
    pp.highly_variable_genes(a, n_top_genes=2000, device="cpu")
    assert a.var["highly_variable"].all() and a.var["highly_variable_rank"].notna().all()
    assert "n_top_genes=2000 is more than the 150 genes there are: using all 150" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_top_genes must be at least 1"):
        pp.highly_variable_genes(a, n_top_genes=0, device="cpu")
    with pytest.raises(ValueError, match="whole number"):
        variable_genes(a.X, 2.5)


def test_bad_input_gives_clear_errors(pbmc3_counts, pbmc3_logged):
    a = pbmc3_counts.copy()
    logged = pbmc3_logged.copy()
    with pytest.raises(ValueError, match="non-integer.*counts"):
        pp.highly_variable_genes(logged, n_top_genes=100, device="cpu")
    logged.layers["counts"] = a.X
    pp.highly_variable_genes(logged, layer="counts", n_top_genes=100, device="cpu")  # the fix works
    with pytest.raises(KeyError, match="Columns that exist: .*donor"):
        pp.highly_variable_genes(a, n_top_genes=100, batch_key="sample", device="cpu")
    a.obs["gap"] = pd.Series(np.where(np.arange(a.n_obs) < 5, None, "b"), index=a.obs_names, dtype=object)
    with pytest.raises(ValueError, match=r"obs\['gap'\] has 5 missing values"):
        pp.highly_variable_genes(a, n_top_genes=100, batch_key="gap", device="cpu")
    assert (a.X != pbmc3_counts.X).nnz == 0  # untouched by the failures


@pytest.mark.needs_r
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R (Rscript) is not installed")
def test_loess_matches_r(pbmc3_counts, tmp_path):
    """loess_fitted = R's stats::loess (the same netlib dloess) at the vst's span (0.3, log10 variance
    on log10 mean of counts) and at R's default span 0.75 (Augur's trend: mean / sd on mean of
    log-normalised data)."""
    x = pbmc3_counts.X
    mean = np.asarray(x.mean(axis=0)).ravel()
    var = np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2
    keep = var > 0
    lx = log_normalize(x)
    lm = np.asarray(lx.mean(axis=0)).ravel()
    lsd = np.sqrt(np.maximum(np.asarray(lx.multiply(lx).mean(axis=0)).ravel() - lm**2, 0))
    k2 = lsd > 0
    cases = {"vst": (np.log10(mean[keep]), np.log10(var[keep]), 0.3),
             "augur": (lm[k2], lm[k2] / lsd[k2], 0.75)}
    for name, (xv, yv, span) in cases.items():
        f = tmp_path / f"{name}.csv"
        pd.DataFrame({"x": xv, "y": yv}).to_csv(f, index=False, float_format="%.17g")
        code = (f"d <- read.csv('{f}'); fit <- loess(y ~ x, data = d, span = {span}, degree = 2); "
                f"write.csv(data.frame(f = fitted(fit)), '{f}.out', row.names = FALSE)")
        subprocess.run(["Rscript", "-e", code], check=True, capture_output=True)
        r = pd.read_csv(f"{f}.out")["f"].to_numpy()
        np.testing.assert_allclose(loess_fitted(xv, yv, span=span), r, rtol=1e-9, atol=1e-12, err_msg=name)
    with pytest.raises(ValueError, match="test: the loess fit failed"):
        loess_fitted(np.ones(20), np.arange(20.0), span=0.3, widen=False, name="test")
