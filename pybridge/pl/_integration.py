"""Embedding coloured by batch and label: did integration mix batches and keep types apart?"""

from __future__ import annotations

from ._utils import obs_column, obsm_2d


def integration(adata, *, basis: str = "X_umap", batch_key: str, label_key: str, scores: dict | None = None,
                size: float | None = None, **kwargs):
    """Two panels of one 2-D embedding: coloured by ``batch_key`` and by ``label_key``.

    Parameters
    ----------
    adata
        AnnData with ``obsm[basis]`` (cells x >= 2; the first two columns are drawn) and the two
        ``obs`` columns.
    basis
        obsm key of a 2-D embedding, e.g. the UMAP of the scVI latent space (``"X_umap"``);
        ``"umap"`` finds ``"X_umap"``.
    batch_key, label_key
        obs columns (categorical or strings).
    scores
        Optional output of :func:`pybridge.tl.integration_scores`: ``ilisi_norm`` / ``asw_batch``
        go in the batch panel's title, ``clisi_norm`` / ``asw_label`` in the label panel's.
    size, **kwargs
        Passed to :func:`scanpy.pl.embedding`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    KeyError
        When the embedding or a column is missing (the message lists what exists).
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    obsm_2d(adata, basis)
    obs_column(adata, batch_key, "batch_key")
    obs_column(adata, label_key, "label_key")
    key = basis if basis in adata.obsm else f"X_{basis}"

    def title(keys):
        if not scores:
            return None
        got = [f"{k} {float(scores[k]):.2f}" for k in keys if k in scores]
        return ", ".join(got) or None

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, col, keys in ((axes[0], batch_key, ("ilisi_norm", "asw_batch")),
                          (axes[1], label_key, ("clisi_norm", "asw_label"))):
        t = title(keys)
        sc.pl.embedding(adata, basis=key, color=col, ax=ax, show=False, size=size,
                        title=f"{col}" + (f" ({t})" if t else ""), **kwargs)
    fig.tight_layout()
    return fig
