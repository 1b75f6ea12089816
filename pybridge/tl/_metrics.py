"""Integration quality of an embedding: batch mixing and cell-type separation.

Measures (as in the scIB benchmark, Luecken et al. 2022, Nat Methods 19:41):

- LISI (local inverse Simpson's index; Korsunsky et al. 2019, *Fast, sensitive and accurate
  integration of single-cell data with Harmony*, Nat Methods 16:1289): for each cell, the
  effective number of batches (iLISI) or cell types (cLISI) among its neighbours, with
  Gaussian neighbour weights calibrated to a fixed perplexity (Harmony's ``compute_lisi``).
  Normalised as in scIB: ``ilisi_norm = (median iLISI - 1) / (n_batches - 1)`` (1 = perfectly
  mixed), ``clisi_norm = (n_labels - median cLISI) / (n_labels - 1)`` (1 = types apart).
- Silhouette (Rousseeuw 1987; :func:`sklearn.metrics.silhouette_score`):
  ``asw_label = (ASW of labels + 1) / 2`` (1 = types apart) and scIB's batch ASW
  ``asw_batch`` = mean over labels of ``1 - |silhouette of batch|`` within the label
  (1 = batches mixed within each type).
- ``knn_label_accuracy``: leave-one-out k-nearest-neighbour label accuracy (types stay apart).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._core import check_obs_key


def _knn(X: np.ndarray, k: int):
    from sklearn.neighbors import NearestNeighbors

    k = min(k, X.shape[0] - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    dist, idx = nn.kneighbors(X)
    return dist[:, 1:], idx[:, 1:]  # drop self


def lisi(dist: np.ndarray, idx: np.ndarray, labels: np.ndarray, *, perplexity: float = 30.0,
         tol: float = 1e-5, n_iter: int = 50) -> np.ndarray:
    """Per-cell LISI (Harmony's ``compute_simpson_index``), vectorised over cells.

    Parameters
    ----------
    dist, idx
        ``n_cells x k`` neighbour distances (Euclidean) and indices, self excluded.
    labels
        Integer codes ``0..L-1`` of the category (batch or cell type), length ``n_cells``.

    Returns
    -------
    ``n_cells`` float array: inverse Simpson's index, between 1 and the number of categories.
    """
    n, _ = dist.shape
    D = dist.astype(np.float64)
    logU = np.log(perplexity)
    beta = np.ones(n)
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    P = None
    for _ in range(n_iter):
        P = np.exp(-D * beta[:, None])
        sumP = P.sum(axis=1)
        ok = sumP > 0
        H = np.where(ok, np.log(np.where(ok, sumP, 1.0)) + beta * (D * P).sum(axis=1) / np.where(ok, sumP, 1.0), 0.0)
        P = np.where(ok[:, None], P / np.where(ok, sumP, 1.0)[:, None], 0.0)
        diff = H - logU
        if np.all(np.abs(diff) < tol):
            break
        up = diff > 0  # entropy too high -> increase beta
        lo = np.where(up, beta, lo)
        hi = np.where(up, hi, beta)
        beta = np.where(up, np.where(np.isinf(hi), beta * 2, (beta + hi) / 2),
                        np.where(np.isinf(lo), beta / 2, (beta + lo) / 2))
    L = int(labels.max()) + 1
    nb = labels[idx]
    simpson = np.zeros(n)
    for c in range(L):
        simpson += (P * (nb == c)).sum(axis=1) ** 2
    with np.errstate(divide="ignore"):
        return np.where(simpson > 0, 1.0 / simpson, 1.0)


def _batch_asw(X, batch, labels, rng, max_cells):
    from sklearn.metrics import silhouette_samples

    per_label = []
    for lab in np.unique(labels):
        m = labels == lab
        if m.sum() < 3 or len(np.unique(batch[m])) < 2:
            continue  # scIB skips labels present in one batch only
        sel = np.flatnonzero(m)
        if len(sel) > max_cells:
            sel = rng.choice(sel, max_cells, replace=False)
        s = silhouette_samples(X[sel], batch[sel])
        per_label.append(np.mean(1.0 - np.abs(s)))
    return float(np.mean(per_label)) if per_label else float("nan")


def integration_scores(adata, *, embedding: str, batch_key: str, label_key: str, perplexity: float = 30.0,
                       n_neighbors: int = 15, max_cells: int = 20_000, random_state: int = 0) -> dict:
    """Score an embedding for batch mixing and cell-type separation.

    Parameters
    ----------
    adata
        AnnData with ``obsm[embedding]`` (``n_obs x d``, e.g. ``"X_scVI"`` or ``"X_pca"``) and
        obs columns ``batch_key`` and ``label_key`` (cells with NA in either are dropped).
    perplexity
        LISI perplexity (Harmony's default 30); ``3 * perplexity`` neighbours are used.
    n_neighbors
        Neighbours for ``knn_label_accuracy``.
    max_cells
        Silhouettes are computed on at most this many randomly chosen cells (O(n^2)).
    random_state
        Seed of that subsample.

    Returns
    -------
    dict of floats (higher = better for every ``*_norm``/``asw_*``/accuracy score):
    ``ilisi`` (median, 1..n_batches), ``ilisi_norm``, ``clisi`` (median, 1..n_labels),
    ``clisi_norm``, ``asw_label``, ``asw_batch``, ``knn_label_accuracy``, plus ``n_cells``,
    ``n_batches``, ``n_labels``.

    Raises
    ------
    KeyError
        ``embedding`` not in ``obsm`` or a column not in ``obs`` (lists what exists).
    ValueError
        Fewer than 2 batches or labels, or fewer than 10 cells.
    """
    if embedding not in adata.obsm:
        raise KeyError(f"embedding {embedding!r} is not in obsm. Keys that exist: {', '.join(adata.obsm.keys()) or '(none)'}.")
    check_obs_key(adata, batch_key, what="batch column")
    check_obs_key(adata, label_key, what="label column")
    X = adata.obsm[embedding]
    X = X.to_numpy(dtype=np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=np.float64)
    return integration_scores_arrays(X, adata.obs[batch_key].to_numpy(), adata.obs[label_key].to_numpy(),
                                     perplexity=perplexity, n_neighbors=n_neighbors, max_cells=max_cells,
                                     random_state=random_state)


def integration_scores_arrays(embedding, batch, labels, *, perplexity: float = 30.0, n_neighbors: int = 15,
                              max_cells: int = 20_000, random_state: int = 0) -> dict:
    """:func:`integration_scores` on arrays: ``embedding`` (``n_cells x d``), ``batch`` and
    ``labels`` (length ``n_cells``; NA/None cells dropped). Used by R's ``IntegrationScores()``."""
    from sklearn.metrics import silhouette_score

    X = np.asarray(embedding, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"embedding must be 2-d (cells x dimensions), got shape {X.shape}.")
    b = pd.Series(np.asarray(batch, dtype=object))
    lab = pd.Series(np.asarray(labels, dtype=object))
    if len(b) != X.shape[0] or len(lab) != X.shape[0]:
        raise ValueError(f"embedding has {X.shape[0]} cells but batch has {len(b)} and labels {len(lab)} values.")
    keep = (b.notna() & lab.notna()).to_numpy() & np.all(np.isfinite(X), axis=1)
    X = X[keep]
    batch = pd.Categorical(b[keep].astype(str)).codes.astype(int)
    labels = pd.Categorical(lab[keep].astype(str)).codes.astype(int)
    nb, nl = len(np.unique(batch)), len(np.unique(labels))
    if X.shape[0] < 10 or nb < 2 or nl < 2:
        raise ValueError(f"integration scores need >= 10 cells, >= 2 batches and >= 2 labels "
                         f"(have {X.shape[0]} cells, {nb} batches, {nl} labels).")
    rng = np.random.default_rng(random_state)
    dist, idx = _knn(X, int(3 * perplexity))
    ilisi = float(np.median(lisi(dist, idx, batch, perplexity=perplexity)))
    clisi = float(np.median(lisi(dist, idx, labels, perplexity=perplexity)))
    k = min(n_neighbors, idx.shape[1])
    votes = labels[idx[:, :k]]
    pred = np.array([np.bincount(v, minlength=nl).argmax() for v in votes])
    sel = np.arange(X.shape[0])
    if len(sel) > max_cells:
        sel = rng.choice(sel, max_cells, replace=False)
    asw_label = float((silhouette_score(X[sel], labels[sel]) + 1) / 2)
    return {
        "ilisi": ilisi,
        "ilisi_norm": (ilisi - 1) / (nb - 1),
        "clisi": clisi,
        "clisi_norm": (nl - clisi) / (nl - 1),
        "asw_label": asw_label,
        "asw_batch": _batch_asw(X, batch, labels, rng, max_cells),
        "knn_label_accuracy": float(np.mean(pred == labels)),
        "n_cells": int(X.shape[0]),
        "n_batches": int(nb),
        "n_labels": int(nl),
    }


def knn_label_transfer(reference_embedding, reference_labels, query_embedding, *, k: int = 15):
    """Transfer labels from reference to query cells by majority vote of ``k`` nearest reference
    neighbours in a shared embedding (e.g. an scVI latent space after :func:`map_query_scvi`).

    Returns
    -------
    (labels, score): list of ``n_query`` labels (str) and a float array, the fraction of the
    ``k`` neighbours that carry the chosen label. Reference cells with NA labels are ignored.
    """
    from sklearn.neighbors import NearestNeighbors

    R = np.asarray(reference_embedding, dtype=np.float64)
    Q = np.asarray(query_embedding, dtype=np.float64)
    lab = pd.Series(np.asarray(reference_labels, dtype=object))
    if R.ndim != 2 or Q.ndim != 2 or R.shape[1] != Q.shape[1]:
        raise ValueError(f"reference ({R.shape}) and query ({Q.shape}) embeddings must be 2-d with the same "
                         "number of dimensions.")
    if len(lab) != R.shape[0]:
        raise ValueError(f"reference has {R.shape[0]} cells but {len(lab)} labels.")
    keep = lab.notna().to_numpy()
    R, lab = R[keep], lab[keep].astype(str)
    cats = pd.Categorical(lab)
    codes = cats.codes.astype(int)
    k = int(min(k, R.shape[0]))
    idx = NearestNeighbors(n_neighbors=k).fit(R).kneighbors(Q, return_distance=False)
    votes = np.stack([np.bincount(codes[i], minlength=len(cats.categories)) for i in idx])
    best = votes.argmax(axis=1)
    return [str(x) for x in np.asarray(cats.categories)[best]], (votes.max(axis=1) / k).astype(np.float64)
