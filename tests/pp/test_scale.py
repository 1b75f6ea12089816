"""pybridge.pp._scale: scale = scanpy's (and Seurat's ScaleData), scale_matrix = the same on a bare matrix."""

import anndata as ad
import numpy as np
import scipy.sparse as sp

from pybridge import pp
from pybridge.pp._normalization import log_normalize
from pybridge.pp._scale import scale_matrix


def test_scale_matches_scanpy(chain):
    ours, sub = chain["ours"], chain["sub"]
    x = ours.obsm["X_scaled"]
    assert x.shape == sub.shape and x.dtype == np.float32
    np.testing.assert_allclose(x, sub.X, atol=2e-5)
    assert x.max() <= 10 and x.min() >= -10
    hv = chain["hv"]
    np.testing.assert_allclose(ours.var["mean"].to_numpy()[hv], sub.var["mean"], rtol=1e-6)
    np.testing.assert_allclose(ours.var["std"].to_numpy()[hv], sub.var["std"], rtol=1e-6)
    assert np.isnan(ours.var["mean"].to_numpy()[~hv]).all()


def test_scale_matrix_is_scale(pbmc3_counts):
    x = log_normalize(pbmc3_counts.X[:, :300])
    a = ad.AnnData(x.copy())
    pp.scale(a, max_value=10, device="cpu")
    out, mean, std = scale_matrix(x, max_value=10)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, a.X)
    np.testing.assert_array_equal(mean, a.var["mean"])
    np.testing.assert_array_equal(std, a.var["std"])
    # as written out (ddof=1; constant genes left unscaled, clipped at +-10)
    d = x.toarray().astype(np.float64)
    sd = d.std(axis=0, ddof=1)
    sd[sd == 0] = 1
    np.testing.assert_allclose(out, np.clip((d - d.mean(axis=0)) / sd, -10, 10), atol=2e-5)
    # without centring, sparse stays sparse; clipped from above only
    s, _, _ = scale_matrix(x, zero_center=False, max_value=3)
    assert sp.issparse(s) and s.max() <= 3 and s.nnz == x.nnz
    np.testing.assert_allclose(s.toarray(), np.minimum(d / sd, 3), atol=2e-5)
