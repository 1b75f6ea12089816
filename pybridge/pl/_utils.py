"""Lookups shared by the plots: clear errors listing what exists."""

from __future__ import annotations

import numpy as np


def obsm_2d(adata, basis: str) -> np.ndarray:
    """The first two columns of ``adata.obsm[basis]`` (``"umap"`` finds ``"X_umap"``).

    Raises
    ------
    KeyError
        When neither ``basis`` nor ``"X_" + basis`` is in ``obsm`` (lists the keys).
    ValueError
        When it has fewer than two columns.
    """
    for k in (basis, f"X_{basis}"):
        if k in adata.obsm:
            x = np.asarray(adata.obsm[k])
            if x.ndim != 2 or x.shape[1] < 2:
                raise ValueError(f"obsm[{k!r}] has {x.shape[1] if x.ndim == 2 else 0} columns; a 2-D embedding "
                                 "is needed (e.g. X_umap).")
            return x[:, :2]
    raise KeyError(f"basis {basis!r} is not in obsm. Keys that exist: {', '.join(adata.obsm.keys()) or '(none)'}. "
                   "Compute a 2-D embedding first, e.g. sc.pp.neighbors(adata, use_rep='X_scVI'); sc.tl.umap(adata).")


def obs_column(adata, key: str, what: str):
    if key not in adata.obs.columns:
        raise KeyError(f"{what} {key!r} is not in obs. Columns that exist: {', '.join(map(str, adata.obs.columns))}.")
    return adata.obs[key]
