"""Reading, writing and converting: the Seurat <-> AnnData bridge.

- :func:`anndata_from_parts` / :func:`anndata_to_parts`: the in-memory bridge used by the R
  package (``as.AnnData`` / ``as.Seurat``).
- :func:`read_seurat` / :func:`write_seurat`: Seurat ``.rds`` files from Python (rpy2).
- :func:`df_to_parts` / :func:`df_from_parts`, :func:`matrix_to_parts`: typed parts that cross
  the language boundary.
"""

from importlib import import_module

from ._bridge import anndata_from_parts, anndata_to_parts
from ._parts import df_from_parts, df_to_parts, matrix_to_parts, r_vector_view, sparse_from_parts

_LAZY = {"read_seurat": "._seurat_rds", "write_seurat": "._seurat_rds", "write_h5ad_atomic": "._atomic",
         "atomic_path": "._atomic"}

__all__ = ["anndata_from_parts", "anndata_to_parts", "df_from_parts", "df_to_parts", "matrix_to_parts",
           "r_vector_view", "sparse_from_parts", *sorted(_LAZY)]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'pybridge.io' has no attribute {name!r}")
