"""Jobs (scanpy-style ``tl``): each takes an AnnData, writes results into it, returns a summary.

Functions are imported lazily so that ``import pybridge.tl`` does not import torch or
scvi-tools until a job runs.
"""

from .._lazy import lazy_exports

_FUNCS = {
    "integrate_scvi": "._scvi",
    "map_query_scvi": "._scvi_query",
    "integration_scores": "._metrics",
    "integration_scores_arrays": "._metrics",
    "knn_label_transfer": "._metrics",
    "annotate": "._annotate",
    "annotate_tosica": "._tosica",
    "annotate_scanvi": "._scanvi",
    "annotate_celltypist": "._celltypist",
    "read_gmt": "pybridge._core",
    "deconvolve": "._deconvolve",
    "cell2location": "._cell2location",
    "nnls": "._nnls",
    "score_perturbation": "._perturbation",
    "augur": "._augur",
    "mixscape": "._mixscape",
    "insilico_deletion": "._insilico",
    "neighbors": "pybridge.pp._neighbors",  # alias: neighbors lives in pp (as scanpy's)
    "umap": "._umap",
    "leiden": "._leiden",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _FUNCS)
