"""Annotation transfer: predicted labels on an embedding, and the confusion matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._utils import obs_column, obsm_2d


def prediction(adata, *, basis: str = "X_umap", key: str = "predicted_celltype", score_key: str | None = None,
               size: float | None = None, **kwargs):
    """An embedding coloured by the predicted label and by its probability.

    Parameters
    ----------
    adata
        The query after :func:`pybridge.tl.annotate` (``obs[key]`` and ``obs[score_key]``).
    basis
        obsm key of a 2-D embedding.
    key
        obs column with the predicted labels (``annotate``'s ``key_added``).
    score_key
        obs column with the probability of the predicted label (default ``key + "_probability"``).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    KeyError
        When the embedding or a column is missing.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    score_key = score_key or f"{key}_probability"
    obsm_2d(adata, basis)
    obs_column(adata, key, "key")
    obs_column(adata, score_key, "score_key")
    b = basis if basis in adata.obsm else f"X_{basis}"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    sc.pl.embedding(adata, basis=b, color=key, ax=axes[0], show=False, size=size, **kwargs)
    sc.pl.embedding(adata, basis=b, color=score_key, ax=axes[1], show=False, size=size, vmin=0, vmax=1,
                    color_map="viridis", **kwargs)
    fig.tight_layout()
    return fig


def confusion_table(truth, predicted, normalize: bool = True) -> pd.DataFrame:
    """Labels x predicted labels (counts, or fractions of each true label when ``normalize``)."""
    tab = pd.crosstab(pd.Series(np.asarray(truth, dtype=object), name="label"),
                      pd.Series(np.asarray(predicted, dtype=object), name="predicted"))
    if normalize:
        tab = tab.div(tab.sum(1).replace(0, np.nan), axis=0).fillna(0.0)
    return tab


def confusion(adata, *, label_key: str, key: str = "predicted_celltype", normalize: bool = True,
              annotate: bool = True, cmap: str = "Blues", ax=None):
    """Heatmap of known labels (rows) x predicted labels (columns).

    Parameters
    ----------
    adata
        AnnData with both columns in ``obs``.
    label_key
        obs column with the known labels (e.g. an author annotation of the query).
    key
        obs column with the predicted labels.
    normalize
        Show each row as fractions of that label's cells (else counts).
    annotate
        Write the values in the cells.
    ax
        An existing Axes to draw into.

    Returns
    -------
    matplotlib.figure.Figure
        Its heatmap's data is in ``fig.confusion_table`` (a DataFrame).
    """
    import matplotlib.pyplot as plt

    tab = confusion_table(obs_column(adata, label_key, "label_key"), obs_column(adata, key, "key"), normalize)
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.55 * tab.shape[1] + 3, 0.45 * tab.shape[0] + 2))
    else:
        fig = ax.figure
    im = ax.imshow(tab.to_numpy(), cmap=cmap, vmin=0, vmax=1 if normalize else None, aspect="auto")
    ax.set_xticks(range(tab.shape[1]), tab.columns, rotation=90)
    ax.set_yticks(range(tab.shape[0]), tab.index)
    ax.set_xlabel(key)
    ax.set_ylabel(label_key)
    if annotate:
        v = tab.to_numpy()
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                if v[i, j] > 0:
                    ax.text(j, i, f"{v[i, j]:.2f}" if normalize else f"{int(v[i, j])}", ha="center", va="center",
                            fontsize=7, color="white" if v[i, j] > 0.6 * v.max() else "black")
    fig.colorbar(im, ax=ax, label="fraction of label" if normalize else "cells")
    fig.tight_layout()
    fig.confusion_table = tab
    return fig
