"""Leiden clustering of a cell graph: rapids-singlecell (cuGraph) on a GPU, scanpy (igraph) otherwise.

pybridge does not re-implement Leiden (Traag et al. 2019): :func:`leiden` calls the library's;
labels are then renumbered by decreasing cluster size, as Seurat's ``FindClusters`` (the call is
shared with :func:`pybridge.pp.run_chain` in :mod:`pybridge.pp._neighbors`).
"""

from __future__ import annotations

from .._core import logger
from ..pp._array import Device
from ..pp._docs import doc_copy, doc_device, doc_device_raises, doc_params
from ..pp._neighbors import check_key, graph_backend, run_leiden


@doc_params(doc_copy=doc_copy, doc_device=doc_device, doc_device_raises=doc_device_raises)
def leiden(adata, *, resolution: float = 1.0, key_added: str = "leiden", obsp: str | None = None,
           neighbors_key: str | None = None, use_weights: bool = True, n_iterations: int = -1,
           random_state: int = 0, copy: bool = False, device: Device = "auto"):
    """Leiden clustering (Traag et al. 2019) of a cell graph.

    Calls ``rapids_singlecell.tl.leiden`` (cuGraph) on a GPU or :func:`scanpy.tl.leiden`
    (igraph's Leiden, modularity with ``resolution``) on the CPU.

    Parameters
    ----------
    adata
        AnnData with a graph in ``obsp``.
    resolution
        Higher values give more clusters (Seurat's ``FindClusters`` resolution plays the same role).
    key_added
        ``obs`` column for the labels (categorical ``"0", "1", ...``, largest cluster first).
    obsp
        ``obsp`` key of the graph, e.g. ``"snn"`` (Seurat's SNN); default: the neighbour
        connectivities.
    neighbors_key
        ``uns`` key of the neighbour graph when ``obsp`` is not given.
    use_weights
        Use the edge weights.
    n_iterations
        Leiden iterations on the CPU (negative: until no improvement).
    random_state
        Seed.
    {doc_copy}
    {doc_device}

    Returns
    -------
    ``None`` or the copy; ``obs[key_added]`` and ``uns[key_added]["params"]``.

    Raises
    ------
    KeyError
        ``obsp`` not in ``adata.obsp`` (the message lists the keys).
    {doc_device_raises}
    """
    mod, name = graph_backend(device)
    if copy:
        adata = adata.copy()
    check_key(adata.obsp, obsp, f"obsp {obsp!r} is not in adata.obsp",
              "Run pybridge.pp.neighbors (snn=True for 'snn') first.")
    run_leiden(adata, mod, name, resolution=resolution, key_added=key_added, obsp=obsp,
               neighbors_key=neighbors_key, use_weights=use_weights, n_iterations=n_iterations,
               random_state=random_state)
    logger.info("leiden: %d clusters with %s", adata.obs[key_added].nunique(), name)
    return adata if copy else None
