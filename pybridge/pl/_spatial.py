"""Deconvolution results on the tissue: one panel per cell type, each with its own colour scale."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._utils import obsm_2d


def abundance_table(adata, key: str = "cell2location", quantity: str = "q05") -> pd.DataFrame:
    """``obsm[f"{key}_{quantity}"]`` (spots x cell types) as written by :func:`pybridge.tl.deconvolve`.

    Raises
    ------
    KeyError
        When it is missing (lists the deconvolution results that exist).
    """
    k = f"{key}_{quantity}"
    if k not in adata.obsm:
        have = [m for m in adata.obsm.keys() if isinstance(adata.obsm[m], pd.DataFrame)]
        raise KeyError(f"obsm[{k!r}] not found: run pybridge.tl.deconvolve(..., key_added={key!r}) first. "
                       f"Results that exist: {', '.join(have) or '(none)'}.")
    df = adata.obsm[k]
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame(np.asarray(df), index=adata.obs_names)


def spatial_abundance(adata, cell_types=None, *, key: str = "cell2location", quantity: str = "q05",
                      basis: str = "spatial", ncols: int = 4, size: float = 12.0, cmap: str = "magma",
                      invert_y: bool = True):
    """Cell-type abundance per spot on the spot coordinates, one panel (and colour scale) per type.

    Parameters
    ----------
    adata
        Spots after :func:`pybridge.tl.deconvolve`, with coordinates in ``obsm[basis]``
        (spots x 2, pixels or micrometres).
    cell_types
        Types to draw (default: all), in this order.
    key, quantity
        Which result: ``obsm[f"{key}_{quantity}"]``; ``quantity`` is ``"q05"``, ``"mean"``,
        ``"q95"`` or ``"proportions"`` (cell2location) or ``"mean"`` / ``"proportions"`` (NNLS).
    basis
        obsm key of the coordinates.
    invert_y
        Image convention (y grows downwards), as Visium coordinates are.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    KeyError
        Missing result or coordinates, or a cell type that is not in the result (lists them).
    """
    import matplotlib.pyplot as plt

    tab = abundance_table(adata, key, quantity)
    xy = obsm_2d(adata, basis)
    types = list(tab.columns) if cell_types is None else [cell_types] if isinstance(cell_types, str) \
        else list(cell_types)
    missing = [t for t in types if t not in tab.columns]
    if missing:
        raise KeyError(f"cell types not in obsm['{key}_{quantity}']: {', '.join(map(str, missing))}. "
                       f"Types that exist: {', '.join(map(str, tab.columns))}.")
    ncols = max(1, min(int(ncols), len(types)))
    nrows = math.ceil(len(types) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.1 * nrows), squeeze=False)
    for ax, t in zip(axes.ravel(), types):
        v = tab[t].to_numpy(dtype=float)
        sc_ = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=size, cmap=cmap, vmin=0, vmax=float(np.nanmax(v)) or 1.0,
                         linewidths=0)
        ax.set_title(str(t), fontsize=10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if invert_y:
            ax.invert_yaxis()
        fig.colorbar(sc_, ax=ax, shrink=0.75)
    for ax in axes.ravel()[len(types):]:
        ax.set_visible(False)
    fig.suptitle(f"{key} {quantity}", fontsize=11)
    fig.tight_layout()
    return fig
