"""Data handling of the TOSICA-style annotator: counts in, standardised model inputs out.

Used by :class:`pybridge.models.TOSICA` (and the label-transfer jobs in ``pybridge.tl``):
reading and checking counts, matching genes by name, the gene-set tokens, per-gene
standardisation statistics, the class reweighting that makes a query's statistics comparable
with the reference's, and the fingerprint that identifies a training reference. Log-normalisation is :func:`pybridge.pp.log_normalize`.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import scipy.sparse as sp

from .._core import check_counts, get_matrix, logger


def counts_matrix(adata, layer: str | None, *, name: str) -> sp.csr_matrix:
    """Counts of ``adata`` (``X`` or ``layers[layer]``) as CSR float32, checked to be counts."""
    x = get_matrix(adata, layer)
    where = f"{name} {'X' if layer is None else 'layer ' + repr(layer)}"
    arg = {"query": "layer=", "reference": "reference_layer="}.get(name, "layer=")
    check_counts(x, name=where, hint=f"pass the layer holding raw counts ({arg}...)")
    return sp.csr_matrix(x, dtype=np.float32)


def align_genes(x: sp.csr_matrix, have: list[str], genes: list[str]) -> sp.csr_matrix:
    """Columns of ``x`` (named ``have``) reordered to ``genes``; genes not in ``have`` are 0."""
    pos = {g: i for i, g in enumerate(have)}
    src = np.array([pos.get(g, -1) for g in genes])
    ok = src >= 0
    sel = sp.csr_matrix(
        (np.ones(ok.sum(), dtype=np.float32), (src[ok], np.flatnonzero(ok))), shape=(len(have), len(genes))
    )
    return sp.csr_matrix(x @ sel)


def lognorm_over(adata, layer: str | None, genes: list[str], *, name: str, target_sum: float = 1e4):
    """Counts of ``adata`` over ``genes`` (missing genes 0), log-normalised (Seurat's LogNormalize
    over these genes: ``log1p(count / cell total * target_sum)``), CSR float32."""
    from ..pp import log_normalize

    x = align_genes(counts_matrix(adata, layer, name=name), list(map(str, adata.var_names)), genes)
    return sp.csr_matrix(log_normalize(x, target_sum))


def auto_batch_size(n_cells: int) -> int:
    """Cells per training step when none is given: 256, smaller for small references so that an
    epoch has at least 16 steps (never below 32)."""
    return int(max(1, min(n_cells, 256, max(32, n_cells // 16))))


def top_variable(x: sp.csr_matrix, n: int) -> np.ndarray:
    """Indices (sorted) of the ``n`` most variable genes of log-normalised ``x`` (Seurat flavour)."""
    from ..pp import variable_genes

    return np.sort(np.flatnonzero(variable_genes(x, n, flavor="seurat")["highly_variable"].to_numpy()))


def gene_stats(x: sp.csr_matrix, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and inverse standard deviation of ``x`` (cells weighted by ``weights``);
    genes that do not vary get an inverse sd of 0 (they contribute nothing)."""
    if weights is None:
        weights = np.ones(x.shape[0])
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mean = np.asarray(x.T @ w).ravel()
    var = np.asarray(x.multiply(x).T @ w).ravel() - mean ** 2
    sd = np.sqrt(np.maximum(var, 0))
    inv = np.where(sd > 1e-6, 1.0 / np.maximum(sd, 1e-6), 0.0)
    return mean.astype(np.float32), inv.astype(np.float32)


def composition_weights(predicted: np.ndarray, reference_fraction: np.ndarray) -> np.ndarray:
    """Per-cell weights that give a query the reference's cell-type composition.

    ``predicted`` are the query's (first-pass) class indices; a cell of class ``k`` gets
    ``reference_fraction[k] / query_fraction[k]``, so gene statistics computed with these
    weights compare like with like (a query with twice the reference's share of monocytes does
    not shift every monocyte gene's mean).
    """
    k = len(reference_fraction)
    q = np.bincount(predicted, minlength=k) / max(len(predicted), 1)
    w = np.asarray(reference_fraction)[predicted] / np.maximum(q[predicted], 1e-12)
    return w if w.sum() > 0 else np.ones(len(predicted))


def reference_fingerprint(adata, labels_key: str) -> dict:
    """What identifies a training reference: its label column, classes, cell count and a hash of
    its cell names and labels (a saved model is reused only for the same reference)."""
    col = adata.obs[labels_key]
    lab = col.astype(object).where(col.notna(), None)
    h = hashlib.sha1()
    for name, value in zip(map(str, adata.obs_names), lab):
        h.update(f"{name}\t{value}\n".encode())
    return dict(labels_key=str(labels_key), n_cells=int(adata.n_obs), hash=h.hexdigest(),
                classes=sorted(map(str, lab.dropna().unique())))


def build_tokens(gene_sets, genes: list[str], xn, labels, rng, cfg: dict):
    """Tokens of the model: chosen gene sets (:func:`pybridge._core.select_gene_sets`), learned
    tokens over random gene subsets when no set is usable (with a warning), then the
    "unannotated" token(s) over the genes in no chosen set.

    Returns ``(names, member genes, fallback, gene-set source, selection table)``.
    """
    from .._core import resolve_gene_sets, select_gene_sets

    sets, source = resolve_gene_sets(gene_sets)
    chosen, info = select_gene_sets(
        sets, genes, min_size=cfg["min_set_size"], max_size=cfg["max_set_size"], max_sets=cfg["max_gene_sets"],
        rank_by=cfg["rank_gene_sets"], X=xn, labels=labels, max_overlap=cfg["max_overlap"],
    ) if sets else ({}, None)
    names, members = list(chosen), [chosen[k] for k in chosen]
    fallback = not names
    if fallback:
        n_tok = max(1, cfg["n_learned_tokens"])
        k = min(max(cfg["min_set_size"], int(round(0.015 * len(genes)))), len(genes))
        msg = (f"no usable gene sets ({len(sets)} given from {source}; none has "
               f"{cfg['min_set_size']}-{cfg['max_set_size']} of the {len(genes)} model genes): "
               f"using {n_tok} learned tokens over random gene subsets of {k} genes instead; "
               "their attention has no pathway meaning.")
        warnings.warn(msg, UserWarning, stacklevel=4)
        logger.warning(msg)
        for i in range(n_tok):
            names.append(f"LEARNED_TOKEN_{i + 1}")
            members.append([genes[j] for j in np.sort(rng.choice(len(genes), k, replace=False))])
    covered = set().union(*map(set, members)) if members else set()
    rest = [g for g in genes if g not in covered]
    if rest and cfg["n_unannotated"] > 0:
        for i in range(cfg["n_unannotated"]):
            names.append(f"UNANNOTATED_{i + 1}")
            members.append(rest)
    return names, members, fallback, source, info
