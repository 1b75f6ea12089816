"""UMAP embedding of the neighbour graph: rapids-singlecell on a GPU, scanpy otherwise.

pybridge does not re-implement UMAP (McInnes et al. 2018): :func:`umap` calls
``rapids_singlecell.tl.umap`` (cuML) when it is importable and a CUDA device is visible, and
:func:`scanpy.tl.umap` otherwise (the library choice and the call are shared with
:func:`pybridge.pp.run_chain` in :mod:`pybridge.pp._neighbors`).
"""

from __future__ import annotations

from .._core import logger
from ..pp._array import Device
from ..pp._docs import doc_copy, doc_device, doc_device_raises, doc_params
from ..pp._neighbors import graph_backend, run_umap


@doc_params(doc_copy=doc_copy, doc_device=doc_device, doc_device_raises=doc_device_raises)
def umap(adata, *, min_dist: float = 0.5, spread: float = 1.0, n_components: int = 2,
         maxiter: int | None = None, init_pos: str = "spectral", random_state: int = 0,
         neighbors_key: str | None = None, key_added: str | None = None, copy: bool = False,
         device: Device = "auto"):
    """UMAP embedding of the neighbour graph (``rapids_singlecell.tl.umap`` or :func:`scanpy.tl.umap`).

    Parameters
    ----------
    adata
        AnnData with a neighbour graph (:func:`pybridge.pp.neighbors`).
    min_dist, spread, n_components, maxiter, init_pos
        UMAP parameters, as scanpy (Seurat's ``RunUMAP`` uses ``min.dist = 0.3``).
    random_state
        Seed.
    neighbors_key
        ``uns`` key of the graph (default ``"neighbors"``).
    key_added
        ``obsm`` key (default ``"X_umap"``).
    {doc_copy}
    {doc_device}

    Returns
    -------
    ``None`` or the copy; ``obsm["X_umap"]`` (cells x n_components) and ``uns["umap"]``.

    Raises
    ------
    KeyError
        No neighbour graph (the message says to run :func:`pybridge.pp.neighbors`).
    {doc_device_raises}
    """
    mod, name = graph_backend(device)
    if copy:
        adata = adata.copy()
    nkey = neighbors_key or "neighbors"
    if nkey not in adata.uns:
        raise KeyError(f"no neighbour graph uns[{nkey!r}]: run pybridge.pp.neighbors first.")
    run_umap(adata, mod, min_dist=min_dist, spread=spread, n_components=n_components, maxiter=maxiter,
             init_pos=init_pos, random_state=random_state, neighbors_key=neighbors_key, key_added=key_added)
    logger.info("umap: %d dimensions with %s", n_components, name)
    return adata if copy else None
