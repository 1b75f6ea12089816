"""pybridge.pp._normalization: normalize_total + log1p = scanpy's, and log_normalize (bare matrix) = the same."""

import numpy as np
import pytest
import scipy.sparse as sp

from pybridge import pp
from pybridge.pp._normalization import log_normalize


def test_normalize_log1p_match_scanpy(chain):
    ours, ref = chain["ours"], chain["ref"]
    assert sp.issparse(ours.X) and ours.X.dtype == ref.X.dtype == np.float32
    assert (ours.X != ref.X).nnz == 0 or abs(ours.X - ref.X).max() <= 1e-6
    assert ours.X.nnz == chain["counts"].nnz
    # counts kept, untouched, and the read-only input was not copied into
    assert (ours.layers["counts"] != chain["counts"]).nnz == 0
    assert not ours.layers["counts"].data.flags.writeable


def test_not_inplace_copy_and_bad_layer(pbmc3_counts):
    a = pbmc3_counts
    d = a.copy()
    out = pp.normalize_total(d, target_sum=1e4, inplace=False, device="cpu")
    assert (d.X != a.X).nnz == 0 and set(out) == {"X", "norm_factor"}
    np.testing.assert_allclose(np.asarray(out["X"].sum(axis=1)).ravel(), 1e4, rtol=1e-4)
    np.testing.assert_allclose(out["norm_factor"], np.asarray(a.X.sum(axis=1)).ravel(), rtol=1e-6)
    e = pp.log1p(d, copy=True, device="cpu")
    assert e is not d and (d.X != a.X).nnz == 0 and e.uns["log1p"] == {"base": None}
    # default target: the median of the cell totals (scanpy's)
    pp.normalize_total(d, key_added="n_counts", device="cpu")
    tot = np.asarray(a.X.sum(axis=1)).ravel()
    np.testing.assert_allclose(np.asarray(d.X.sum(axis=1)).ravel(), np.median(tot), rtol=1e-4)
    np.testing.assert_allclose(d.obs["n_counts"], tot, rtol=1e-6)
    with pytest.raises(KeyError, match="layers that exist|Layers that exist"):
        pp.normalize_total(a, layer="nope", device="cpu")
    with pytest.raises(ValueError, match="device must be"):
        pp.log1p(a, device="gpu")


def test_log_normalize_is_the_public_chain(pbmc3_counts):
    """The matrix-level entry point = normalize_total(1e4) + log1p, bit for bit; input untouched."""
    a = pbmc3_counts.copy()
    x = a.X
    before = x.copy()
    y = log_normalize(x, 1e4)
    pp.normalize_total(a, target_sum=1e4, device="cpu")
    pp.log1p(a, device="cpu")
    assert sp.isspmatrix_csr(y) and y.dtype == np.float32
    assert abs(y - a.X).max() == 0
    assert (x != before).nnz == 0
    assert not np.shares_memory(y.indices, x.indices) and not np.shares_memory(y.data, x.data)
    # Seurat's LogNormalize written out: log1p(x / total * 1e4); a zero cell stays zero
    z = sp.vstack([x[:5], sp.csr_matrix((1, x.shape[1]), dtype=np.float32)]).tocsr()
    dense = z.toarray().astype(np.float64)
    tot = dense.sum(axis=1, keepdims=True)
    expect = np.log1p(np.divide(dense, tot, out=np.zeros_like(dense), where=tot > 0) * 1e4)
    np.testing.assert_allclose(log_normalize(z).toarray(), expect, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_normalize(z.toarray(), dtype=np.float64), expect, rtol=1e-12, atol=1e-12)
    assert log_normalize(z).getrow(5).nnz == 0
