"""Jobs (scanpy-style ``tl``): each takes an AnnData, writes results into it, returns a summary.

Functions are imported lazily so that ``import pybridge.tl`` does not import torch or
scvi-tools until a job runs.
"""

from importlib import import_module

_FUNCS = {
    "integrate_scvi": "._scvi",
    "map_query_scvi": "._scvi",
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
__all__ = sorted(_FUNCS)


def __getattr__(name):
    if name in _FUNCS:
        return getattr(import_module(_FUNCS[name], __name__), name)
    raise AttributeError(f"module 'pybridge.tl' has no attribute {name!r}")


def __dir__():
    return __all__
