"""pybridge.pp._neighbors: Seurat's kNN and SNN graphs by definition (equality with FindNeighbors on
real data: test-preprocess.R); tl.neighbors stays an alias."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from pybridge import pp, tl
from pybridge.pp._neighbors import knn_adjacency, snn_from_knn


def test_snn_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    a = ad.AnnData(x)
    a.obsm["X_pca"] = x
    pp.neighbors(a, n_neighbors=12, use_rep="X_pca", snn=True, device="cpu")
    assert a.uns["neighbors"]["params"]["backend"] == "scanpy"
    snn = a.obsp["snn"].toarray()
    knn = a.obsp["knn"]
    assert np.all(np.diff(knn.indptr) == 12) and np.all(knn.diagonal() == 1)
    d = a.obsp["distances"]
    nbrs = [set(d.indices[d.indptr[i]:d.indptr[i + 1]]) | {i} for i in range(a.n_obs)]
    assert all(len(s) == 12 for s in nbrs)
    assert all(set(knn.indices[knn.indptr[i]:knn.indptr[i + 1]]) == nbrs[i] for i in range(a.n_obs))
    for i, j in [(0, 1), (5, 7), (10, 250)] + [(i, next(iter(nbrs[i] - {i}))) for i in range(20)]:
        jac = len(nbrs[i] & nbrs[j]) / len(nbrs[i] | nbrs[j])
        assert snn[i, j] == pytest.approx(jac if jac >= 1 / 15 else 0.0)
    assert np.allclose(snn, snn.T) and np.all(np.diag(snn) == 1)
    assert snn_from_knn(knn, prune=0.5).nnz < a.obsp["snn"].nnz
    # the tl name is the same function (scanpy's home of neighbors is pp)
    assert tl.neighbors is pp.neighbors
    with pytest.raises(KeyError, match="use_rep 'X_umap' is not in obsm. Keys that exist: X_pca"):
        pp.neighbors(a, use_rep="X_umap", device="cpu")


def test_knn_adjacency_with_self_and_extra_neighbours():
    """scanpy's pynndescent path stores n_neighbors + 1 entries per row, the cell itself included
    (distance 0): the kNN graph must still be the cell + its n_neighbors - 1 nearest others."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    dist = np.linalg.norm(x[:, None] - x[None], axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :9]  # self + 8 nearest
    rows = np.repeat(np.arange(200), 9)
    d = sp.csr_matrix((dist[rows, order.ravel()], (rows, order.ravel())), shape=(200, 200))
    knn = knn_adjacency(d, n_neighbors=5)
    assert np.all(np.diff(knn.indptr) == 5)
    for i in (0, 17, 199):
        assert set(knn.indices[knn.indptr[i]:knn.indptr[i + 1]]) == set(order[i, :5])
