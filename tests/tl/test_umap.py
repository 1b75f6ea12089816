"""pybridge.tl.umap: scanpy's UMAP on the neighbour graph (rapids-singlecell on a GPU), clear errors."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

from pybridge import pp, tl


def test_umap_is_scanpys_on_the_graph():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8, size=(3, 10))
    x = np.vstack([c + rng.normal(size=(100, 10)) for c in centres]).astype(np.float32)
    a = ad.AnnData(x)
    a.obsm["X_pca"] = x
    with pytest.raises(KeyError, match=r"no neighbour graph uns\['neighbors'\]: run pybridge.pp.neighbors"):
        tl.umap(a, device="cpu")
    pp.neighbors(a, n_neighbors=15, device="cpu")
    b = tl.umap(a, min_dist=0.3, random_state=0, copy=True, device="cpu")
    assert "X_umap" not in a.obsm and b.obsm["X_umap"].shape == (300, 2)
    ref = a.copy()
    sc.tl.umap(ref, min_dist=0.3, random_state=0)
    np.testing.assert_allclose(b.obsm["X_umap"], ref.obsm["X_umap"], rtol=1e-5, atol=1e-5)
    # the three blobs stay apart: each cell's nearest embedded cell is in its own blob
    e = b.obsm["X_umap"]
    d = np.linalg.norm(e[:, None] - e[None], axis=2)
    np.fill_diagonal(d, np.inf)
    blob = np.repeat(np.arange(3), 100)
    assert np.mean(blob[d.argmin(axis=1)] == blob) > 0.99
