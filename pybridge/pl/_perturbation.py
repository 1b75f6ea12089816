"""Perturbation response per cell type (Augur's AUC), ranked."""

from __future__ import annotations

import pandas as pd


def perturbation_table(adata, key: str = "augur") -> pd.DataFrame:
    """``uns[key]["table"]`` written by :func:`pybridge.tl.score_perturbation` (method ``"augur"``).

    Raises
    ------
    KeyError
        When there is no such result (lists the uns keys that hold one).
    """
    res = adata.uns.get(key)
    if not isinstance(res, dict) or "table" not in res:
        have = [k for k, v in adata.uns.items() if isinstance(v, dict) and "table" in v]
        raise KeyError(f"uns[{key!r}] holds no perturbation result: run pybridge.tl.score_perturbation(..., "
                       f"method='augur') first. Results that exist: {', '.join(have) or '(none)'}.")
    tab = res["table"]
    if not isinstance(tab, pd.DataFrame) or "auc" not in tab.columns:
        raise KeyError(f"uns[{key!r}]['table'] has no 'auc' column: it is not an Augur result.")
    return tab


def perturbation_rank(adata, *, key: str = "augur", top: int = 30, ax=None):
    """Horizontal bars of the AUC per cell type (mean over subsamples, with its standard deviation),
    highest first; 0.5 (no separation of conditions) is marked.

    Parameters
    ----------
    adata
        AnnData after :func:`pybridge.tl.score_perturbation` with ``method="augur"``.
    key
        Its ``key_added``.
    top
        At most this many cell types.
    ax
        An existing Axes to draw into.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    KeyError
        When there is no Augur result under ``key``.
    """
    import matplotlib.pyplot as plt

    tab = perturbation_table(adata, key).dropna(subset=["auc"]).sort_values("auc", ascending=False).head(int(top))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 0.32 * len(tab) + 1.2))
    else:
        fig = ax.figure
    label = tab["cell_type"] if "cell_type" in tab.columns else tab.index
    err = tab["auc_sd"] if "auc_sd" in tab.columns else None
    ax.barh(range(len(tab))[::-1], tab["auc"], xerr=err, color="#4C72B0")
    ax.set_yticks(range(len(tab))[::-1], list(map(str, label)))
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlim(min(0.45, float(tab["auc"].min()) - 0.02), 1.0)
    ax.set_xlabel("AUC (Augur)")
    fig.tight_layout()
    return fig
