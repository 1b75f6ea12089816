"""pybridge.pp._pca: pca = scanpy's (up to sign; Seurat's RunPCA: test-preprocess.R), the solvers agree,
pca_matrix = pca on a bare matrix, clear errors."""

import anndata as ad
import numpy as np
import pytest

from pybridge import pp
from pybridge.pp._pca import pca_matrix


def test_pca_matches_scanpy_up_to_sign(chain):
    ours, sub, hv = chain["ours"], chain["sub"], chain["hv"]
    e1, e2 = ours.obsm["X_pca"], sub.obsm["X_pca"]
    assert e1.shape == e2.shape == (ours.n_obs, 50)
    sign = np.sign((e1 * e2).sum(axis=0))
    cors = np.array([abs(np.corrcoef(e1[:, i], e2[:, i])[0, 1]) for i in range(50)])
    assert cors[:30].min() > 0.99999, cors[:30]
    assert cors.min() > 0.9999, cors
    scale = np.abs(e2[:, :30]).max()
    assert np.abs(e1[:, :30] * sign[:30] - e2[:, :30]).max() < 1e-4 * scale
    load1 = ours.varm["PCs"][hv][:, :30] * sign[:30]
    np.testing.assert_allclose(load1, sub.varm["PCs"][:, :30], atol=1e-4)
    assert np.all(ours.varm["PCs"][~hv] == 0)
    np.testing.assert_allclose(ours.uns["pca"]["variance"], sub.uns["pca"]["variance"], rtol=1e-5)
    np.testing.assert_allclose(ours.uns["pca"]["variance_ratio"], sub.uns["pca"]["variance_ratio"], rtol=1e-5)
    np.testing.assert_allclose(ours.uns["pca"]["stdev"] ** 2, ours.uns["pca"]["variance"], rtol=1e-12)


@pytest.fixture(scope="module")
def scaled(pbmc3_counts):
    """pbmc_3tech's 500 variable genes, log-normalised and scaled (cells x genes, float32)."""
    a = pbmc3_counts.copy()
    pp.run_chain(a, steps=["normalize", "hvg", "scale"], n_top_genes=500, device="cpu")
    return a.obsm["X_scaled"]


def test_pca_solvers_agree(scaled):
    ref = None
    for solver, kw in (("covariance_eigh", {}), ("arpack", {}),
                       ("randomized", dict(n_iter=20, n_oversamples=50))):
        c = ad.AnnData(scaled.copy())
        pp.pca(c, n_comps=20, svd_solver=solver, device="cpu", **kw)
        e = c.obsm["X_pca"]
        if ref is None:
            ref = e
            continue
        cors = [abs(np.corrcoef(e[:, i], ref[:, i])[0, 1]) for i in range(20)]
        assert min(cors) > 0.9999, (solver, cors)


def test_pca_matrix_is_pca(scaled):
    c = ad.AnnData(scaled.copy())
    pp.pca(c, n_comps=15, device="cpu")
    res = pca_matrix(scaled, 15)
    np.testing.assert_array_equal(res.embedding, c.obsm["X_pca"])
    np.testing.assert_array_equal(res.loadings, c.varm["PCs"])
    np.testing.assert_array_equal(res.variance, c.uns["pca"]["variance"])
    np.testing.assert_allclose(res.variance_ratio, c.uns["pca"]["variance_ratio"], rtol=1e-12)
    # a PCA: embedding = centred data x loadings; orthonormal loadings; decreasing variances
    centred = scaled - scaled.mean(axis=0)
    np.testing.assert_allclose(centred @ res.loadings, res.embedding, atol=2e-3)
    np.testing.assert_allclose(res.loadings.T @ res.loadings, np.eye(15), atol=1e-4)
    assert np.all(np.diff(res.variance) <= 0)
    assert res.embedding.dtype == np.float32 and res.variance.dtype == np.float64


def test_pca_errors(scaled):
    c = ad.AnnData(scaled[:, :20].copy())
    with pytest.raises(ValueError, match=r"n_comps=30 must be between 1 and .* = 19"):
        pp.pca(c, n_comps=30, device="cpu")
    with pytest.raises(ValueError, match="svd_solver must be"):
        pp.pca(c, n_comps=5, svd_solver="lapack", device="cpu")
    with pytest.raises(KeyError, match="mask_var 'hv' is not a column of var"):
        pp.pca(c, n_comps=5, mask_var="hv", device="cpu")
    with pytest.raises(ValueError, match="n_comps=0"):
        pca_matrix(scaled, 0)
    assert "X_pca" not in c.obsm
