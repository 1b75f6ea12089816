"""Neighbour graph: ``neighbors`` (rapids-singlecell on a GPU, scanpy otherwise) and Seurat's SNN graph.

pybridge does not re-implement the kNN search: :func:`neighbors` calls
``rapids_singlecell.pp.neighbors`` (cuML; Dicks et al., scverse) when it is importable *and* a
CUDA device is visible, and :func:`scanpy.pp.neighbors` (Wolf et al. 2018; UMAP connectivities:
McInnes et al. 2018) otherwise, with the same keys in the AnnData either way. The only addition
is Seurat's shared-nearest-neighbour (SNN) graph (``FindNeighbors``: Jaccard index of the
neighbourhoods, pruned below 1/15), built from the kNN graph by one sparse product, so that the
clusters are computed on the graph Seurat's ``FindClusters`` uses.

:func:`graph_backend` is the one choice of library for the graph steps, and :func:`run_umap` /
:func:`run_leiden` the backend calls that ``pybridge.tl.umap`` / ``pybridge.tl.leiden`` and
:func:`pybridge.pp.run_chain` share (``pp`` does not import ``tl``).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import logger
from .._device import resolve_device
from ._array import Device
from ._docs import doc_copy, doc_device, doc_device_raises, doc_params


def graph_backend(device: str) -> tuple[ModuleType, str]:
    """``(module, name)``: rapids_singlecell when a GPU is used and it is installed, else scanpy.

    The one choice of library for the graph steps: :func:`neighbors` here, ``pybridge.tl.umap``
    and ``pybridge.tl.leiden``.
    """
    dev = resolve_device(device, backend="cupy")
    if dev != "cpu":
        try:
            import rapids_singlecell as rsc

            return rsc, "rapids_singlecell"
        except ImportError:
            logger.warning("rapids-singlecell is not installed: the graph steps run on the CPU with scanpy "
                           "(pip install rapids-singlecell for the GPU version).")
    import scanpy as sc

    return sc, "scanpy"


def check_key(mapping, key: str | None, what: str, hint: str) -> None:
    """KeyError ``"<what>. Keys that exist: ... <hint>"`` when ``key`` (not None) is not in ``mapping``."""
    if key is not None and key not in mapping:
        have = ", ".join(map(str, mapping.keys())) or "(none)"
        raise KeyError(f"{what}. Keys that exist: {have}. {hint}")


_CSR_NNDESCENT = None


def _nndescent_transformer(n_obs: int, n_neighbors: int, metric: str, random_state: int):
    """pynndescent's transformer with scanpy's defaults, returning a ``csr_matrix``.

    scanpy 1.11 calls ``getnnz`` on the kNN matrix, which pynndescent >= 0.6 returns as a
    ``csr_array``, without ``getnnz`` since scipy 1.15: ``sc.pp.neighbors`` then fails for
    n_obs >= 8192. Same algorithm and parameters as scanpy's default; only the type changes.
    """
    global _CSR_NNDESCENT
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer

    if _CSR_NNDESCENT is None:
        class CsrPyNNDescentTransformer(PyNNDescentTransformer):
            def fit_transform(self, X, y=None, **kwargs):
                return sp.csr_matrix(super().fit_transform(X, y, **kwargs))

            def transform(self, X, y=None):
                return sp.csr_matrix(super().transform(X, y))

        _CSR_NNDESCENT = CsrPyNNDescentTransformer
    return _CSR_NNDESCENT(n_neighbors=n_neighbors, metric=metric, random_state=random_state,
                          n_jobs=sc.settings.n_jobs, n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
                          n_iters=max(5, round(np.log2(n_obs))))


def _scanpy_uses_nndescent(n_obs: int, metric: str) -> bool:
    """scanpy's own choice (neighbors/_handle_transformer): exact brute force for small data."""
    return not ((metric == "euclidean" and n_obs < 8192) or n_obs < 4096)


def _neighbors_key(key_added: str | None) -> tuple[str, str, str, str, str]:
    if key_added is None:
        return "neighbors", "distances", "connectivities", "snn", "knn"
    k = key_added
    return k, f"{k}_distances", f"{k}_connectivities", f"{k}_snn", f"{k}_knn"


def knn_adjacency(distances, n_neighbors: int | None = None) -> sp.csr_matrix:
    """Binary kNN graph with the cell itself: each row holds the cell and its ``n_neighbors - 1``
    nearest other cells (Seurat's ``<assay>_nn`` graph).

    Parameters
    ----------
    distances
        cells x cells sparse matrix of neighbour distances (scanpy's ``obsp["distances"]``; stored
        entries, explicit zeros included, are neighbours; the cell itself may or may not be stored:
        scanpy stores it on its pynndescent path, not on its exact path).
    n_neighbors
        Neighbourhood size, the cell included; ``None``: every stored neighbour.

    Returns
    -------
    CSR float64 matrix of 0/1, rows = cells, columns = their neighbours.
    """
    d = sp.coo_matrix(distances)
    n = d.shape[0]
    keep = d.row != d.col
    r, c, v = d.row[keep], d.col[keep], np.asarray(d.data[keep], dtype=np.float64)
    if n_neighbors is not None:
        order = np.lexsort((c, v, r))  # by row, then distance (ties: column)
        r, c = r[order], c[order]
        rank = np.arange(r.size) - np.searchsorted(r, r, side="left")
        sel = rank < int(n_neighbors) - 1
        r, c = r[sel], c[sel]
    rows = np.concatenate([r, np.arange(n)])
    cols = np.concatenate([c, np.arange(n)])
    adj = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    adj.data[:] = 1.0
    adj.sort_indices()
    return adj


def snn_from_knn(knn, *, prune: float = 1 / 15) -> sp.csr_matrix:
    """Seurat's shared-nearest-neighbour graph (``FindNeighbors``) from a binary kNN graph.

    The weight of (i, j) is the Jaccard index |N(i) ∩ N(j)| / |N(i) ∪ N(j)| of the two cells'
    neighbourhoods (the cells included, see :func:`knn_adjacency`), set to 0 below ``prune``.

    Parameters
    ----------
    knn
        cells x cells 0/1 matrix from :func:`knn_adjacency`.
    prune
        Seurat's ``prune.SNN`` (default 1/15).

    Returns
    -------
    Symmetric CSR float64 matrix with the diagonal set to 1.
    """
    adj = sp.csr_matrix(knn, dtype=np.float64)
    n = adj.shape[0]
    k = np.asarray(adj.sum(axis=1)).ravel()
    shared = (adj @ adj.T).tocoo()
    w = shared.data / (k[shared.row] + k[shared.col] - shared.data)
    keep = w >= prune
    snn = sp.csr_matrix((w[keep], (shared.row[keep], shared.col[keep])), shape=(n, n))
    snn.sort_indices()
    return snn


@doc_params(doc_copy=doc_copy, doc_device=doc_device, doc_device_raises=doc_device_raises)
def neighbors(adata, *, n_neighbors: int = 15, n_pcs: int | None = None, use_rep: str | None = None,
              metric: str = "euclidean", snn: bool = False, snn_prune: float = 1 / 15,
              key_added: str | None = None, random_state: int = 0, copy: bool = False,
              device: Device = "auto"):
    """k-nearest-neighbour graph (distances and UMAP connectivities), optionally Seurat's SNN graph.

    Calls ``rapids_singlecell.pp.neighbors`` on a GPU (when installed) or
    :func:`scanpy.pp.neighbors`, with the same result keys.

    Parameters
    ----------
    adata
        AnnData with the representation ``obsm[use_rep]`` (usually ``"X_pca"``).
    n_neighbors
        Neighbourhood size, the cell itself included (Seurat's ``k.param``; scanpy's default 15).
    n_pcs
        Use the first ``n_pcs`` columns of the representation (Seurat: ``dims = 1:n_pcs``).
    use_rep
        ``obsm`` key to use (default: ``"X_pca"`` when present, as scanpy).
    metric
        Distance metric (Seurat: euclidean).
    snn
        Also build Seurat's graphs: the binary kNN graph with the cell itself
        (:func:`knn_adjacency`, ``obsp["knn"]``) and the shared-nearest-neighbour graph
        (:func:`snn_from_knn`, ``obsp["snn"]``); with ``key_added``: ``obsp[f"{{key_added}}_knn"]``, ...
    snn_prune
        Seurat's ``prune.SNN``.
    key_added
        As scanpy: ``None`` writes ``obsp["distances"]``, ``obsp["connectivities"]``,
        ``uns["neighbors"]``.
    random_state
        Seed of the approximate search.
    {doc_copy}
    {doc_device}

    Returns
    -------
    ``None`` or the copy. ``uns[key]["params"]["backend"]`` names the library that ran.

    Raises
    ------
    KeyError
        ``use_rep`` not in ``obsm`` (the message lists the keys).
    {doc_device_raises}
    """
    mod, name = graph_backend(device)
    if copy:
        adata = adata.copy()
    check_key(adata.obsm, use_rep, f"use_rep {use_rep!r} is not in obsm", "Run pybridge.pp.pca first.")
    kw = {}
    if name == "scanpy" and _scanpy_uses_nndescent(adata.n_obs, metric):
        kw["transformer"] = _nndescent_transformer(adata.n_obs, int(n_neighbors), metric, random_state)
    mod.pp.neighbors(adata, n_neighbors=int(n_neighbors), n_pcs=n_pcs, use_rep=use_rep, metric=metric,
                     key_added=key_added, random_state=random_state, **kw)
    ukey, dkey, _, skey, kkey = _neighbors_key(key_added)
    adata.uns[ukey]["params"]["backend"] = name
    if snn:
        knn = knn_adjacency(adata.obsp[dkey], n_neighbors=int(n_neighbors))
        adata.obsp[kkey] = knn
        adata.obsp[skey] = snn_from_knn(knn, prune=snn_prune)
        adata.uns[ukey]["snn_key"] = skey
        adata.uns[ukey]["knn_key"] = kkey
        adata.uns[ukey]["params"]["snn_prune"] = float(snn_prune)
    logger.info("neighbors: %d per cell with %s%s", n_neighbors, name, " (+ SNN graph)" if snn else "")
    return adata if copy else None


# ----------------------------------------------------------------------------------------------
# backend calls shared by pybridge.tl.umap, pybridge.tl.leiden and run_chain
# ----------------------------------------------------------------------------------------------
def run_umap(adata, mod: ModuleType, *, min_dist: float = 0.5, spread: float = 1.0, n_components: int = 2,
             maxiter: int | None = None, init_pos: str = "spectral", random_state: int = 0,
             neighbors_key: str | None = None, key_added: str | None = None) -> None:
    """``mod.tl.umap`` (scanpy or rapids-singlecell) with pybridge's parameters; in place."""
    mod.tl.umap(adata, min_dist=min_dist, spread=spread, n_components=n_components, maxiter=maxiter,
                init_pos=init_pos, random_state=random_state, neighbors_key=neighbors_key,
                key_added=key_added)


def run_leiden(adata, mod: ModuleType, name: str, *, resolution: float = 1.0, key_added: str = "leiden",
               obsp: str | None = None, neighbors_key: str | None = None, use_weights: bool = True,
               n_iterations: int = -1, random_state: int = 0) -> None:
    """Leiden by ``mod`` (igraph's on the CPU, cuGraph's on a GPU), labels relabelled by size; in place."""
    if name == "scanpy":
        mod.tl.leiden(adata, resolution=resolution, key_added=key_added, obsp=obsp,
                      neighbors_key=neighbors_key, use_weights=use_weights, random_state=random_state,
                      flavor="igraph", n_iterations=n_iterations, directed=False)
    else:
        mod.tl.leiden(adata, resolution=resolution, key_added=key_added, obsp=obsp,
                      neighbors_key=neighbors_key, use_weights=use_weights, random_state=random_state)
    _relabel_by_size(adata, key_added)
    adata.uns.setdefault(key_added, {}).setdefault("params", {})["backend"] = name


def _relabel_by_size(adata, key: str) -> None:
    """Labels ``"0", "1", ...`` by decreasing cluster size (ties: first appearance), as Seurat."""
    codes, uniques = pd.factorize(adata.obs[key].astype(str), sort=False)
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.argsort(-sizes, kind="stable")
    new = np.empty_like(order)
    new[order] = np.arange(len(order))
    cats = [str(i) for i in range(len(order))]
    adata.obs[key] = pd.Categorical.from_codes(new[codes], categories=cats)
