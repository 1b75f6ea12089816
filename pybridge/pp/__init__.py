"""Preprocessing (scanpy-style ``pp``), one module per step, written once for numpy and cupy.

- :mod:`._normalization`: ``normalize_total``, ``log1p`` (and ``log_normalize`` for a bare matrix);
- :mod:`._highly_variable_genes`: ``highly_variable_genes`` (``variable_genes``, ``loess_fitted``);
- :mod:`._scale`: ``scale`` (``scale_matrix``);
- :mod:`._pca`: ``pca`` (``pca_matrix``);
- :mod:`._neighbors`: ``neighbors`` (kNN + Seurat's SNN graph; ``knn_adjacency``, ``snn_from_knn``);
- :mod:`._recipes`: ``run_chain`` (Seurat's chain through UMAP and clusters, one device round trip) and
  ``chain_inputs`` (what a subset of its steps reads from the AnnData);
- :mod:`._array`: the array plumbing (numpy / cupy), :mod:`._docs`: shared docstring fragments.

The matrix-level functions are the entry points other jobs use without an AnnData. Functions
are imported lazily, so ``import pybridge.pp`` stays cheap.
"""

from .._lazy import lazy_exports

_FUNCS = {
    "normalize_total": "._normalization",
    "log1p": "._normalization",
    "log_normalize": "._normalization",
    "highly_variable_genes": "._highly_variable_genes",
    "variable_genes": "._highly_variable_genes",
    "loess_fitted": "._highly_variable_genes",
    "scale": "._scale",
    "pca": "._pca",
    "neighbors": "._neighbors",
    "run_chain": "._recipes",
    "chain_inputs": "._recipes",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _FUNCS)
