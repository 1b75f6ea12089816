"""Gene sets (GMT files) and the choice of gene sets a gene-set-token model uses.

- :func:`read_gmt`: a GMT file (plain or gzipped) -> ``{set name: [genes]}``.
- :func:`resolve_gene_sets`: ``None`` (the embedded human GO-BP file), a GMT path, the name of
  an embedded file or a dict -> ``(dict, source)``.
- :func:`select_gene_sets`: restrict sets to the genes a model sees, drop sets that are too
  small/large or duplicate others, rank and cap their number.

GMT format (Broad Institute / MSigDB): one set per line, tab-separated
``name<TAB>description<TAB>gene1<TAB>gene2...``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._logging import logger

# the embedded GMT lives in pybridge/datasets/; located by path so _core imports nothing above it
_EMBEDDED_GMT = Path(__file__).resolve().parents[1] / "datasets" / "GO_BP_human.gmt.gz"

RANKINGS = ("variance", "label", "coverage", "none")


def read_gmt(path) -> dict[str, list[str]]:
    """Read a GMT file (plain text or ``.gz``) into ``{set name: [genes]}``.

    Parameters
    ----------
    path
        Path of a ``.gmt`` or ``.gmt.gz`` file: tab-separated ``name, description, genes...``
        per line. Blank lines and lines starting with ``#`` are skipped.

    Returns
    -------
    dict
        Set name -> gene symbols (file order, duplicates within a set removed). A name that
        occurs twice keeps the union of its genes.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If a line has fewer than 3 fields (no genes): the file is not GMT.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"GMT file {str(path)!r} does not exist.")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    sets: dict[str, list[str]] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                raise ValueError(
                    f"{path}: line {i} has {len(fields)} tab-separated field(s); a GMT line is "
                    "name<TAB>description<TAB>gene1<TAB>gene2..."
                )
            name = fields[0].strip()
            genes = [g.strip() for g in fields[2:] if g.strip()]
            old = sets.setdefault(name, [])
            seen = set(old)
            for g in genes:
                if g not in seen:
                    old.append(g)
                    seen.add(g)
    return sets


def resolve_gene_sets(gene_sets) -> tuple[dict[str, list[str]], str]:
    """Turn the user's ``gene_sets`` argument into ``(dict, source description)``.

    Parameters
    ----------
    gene_sets
        ``None`` -> the embedded human GO biological-process file
        (``pybridge.datasets.path("GO_BP_human")``); ``"GO_BP_human"`` -> the same; a path to a
        GMT file; a mapping ``{name: genes}``; ``False`` or an empty dict -> no gene sets.

    Raises
    ------
    TypeError
        For any other type.
    """
    if gene_sets is None or (isinstance(gene_sets, str) and gene_sets == "GO_BP_human"):
        return read_gmt(_EMBEDDED_GMT), "GO_BP_human (embedded: GO biological process, org.Hs.eg.db 3.16.0)"
    if gene_sets is False:
        return {}, "none"
    if isinstance(gene_sets, (str, os.PathLike)):
        return read_gmt(gene_sets), str(gene_sets)
    if isinstance(gene_sets, Mapping):
        out = {}
        for k, v in gene_sets.items():
            if isinstance(v, str):
                v = [v]
            out[str(k)] = list(dict.fromkeys(map(str, v)))
        return out, f"dict of {len(out)} sets"
    raise TypeError(
        "gene_sets must be None (embedded GO-BP), a GMT file path, 'GO_BP_human', a dict "
        f"{{name: [genes]}} or False; got {type(gene_sets).__name__}."
    )


def membership_matrix(sets: Mapping[str, Sequence[str]], genes: Sequence[str]) -> sp.csr_matrix:
    """Binary sets x genes matrix (CSR, float32) of ``sets`` restricted to ``genes``."""
    index = {g: i for i, g in enumerate(map(str, genes))}
    rows, cols = [], []
    for r, members in enumerate(sets.values()):
        idx = sorted({index[g] for g in members if g in index})
        rows.extend([r] * len(idx))
        cols.extend(idx)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(sets), len(index)))


def select_gene_sets(
    gene_sets: Mapping[str, Sequence[str]],
    genes: Sequence[str],
    *,
    min_size: int = 5,
    max_size: int = 300,
    max_sets: int | None = 300,
    rank_by: str = "variance",
    X=None,
    labels=None,
    max_overlap: float = 0.8,
) -> tuple[dict[str, list[str]], pd.DataFrame]:
    """Restrict gene sets to ``genes``, filter by size, rank, de-duplicate and cap.

    Parameters
    ----------
    gene_sets
        ``{name: genes}`` (e.g. from :func:`read_gmt`).
    genes
        The genes the model sees (genes shared by query and reference).
    min_size, max_size
        Keep sets with ``min_size <= n <= max_size`` genes among ``genes``.
    max_sets
        Keep at most this many sets (``None``: all that pass). TOSICA's default is 300.
    rank_by
        Which sets to keep first when capping:

        - ``"variance"``: variance across cells of the set score (mean of the log-normalised
          expression of the set's genes) in ``X`` -- sets that vary between cells;
        - ``"label"``: for each label, sets ranked by the one-vs-rest Welch t statistic of the
          set score (higher in that label than in the others); labels take turns (round
          robin), so every cell type, rare ones included, gets its most specific sets;
        - ``"coverage"``: most genes among ``genes``;
        - ``"none"``: file order.
    X
        Cells x ``genes`` log-normalised expression (dense or sparse) for ``"variance"`` and
        ``"label"``.
    labels
        Per-cell labels (length ``X.shape[0]``) for ``"label"``.
    max_overlap
        Walking down the ranking, a set is skipped when its Jaccard index with an already kept
        set exceeds this (GO has many near-identical parent/child terms). ``1`` keeps all.

    Returns
    -------
    (dict, DataFrame)
        Kept sets (name -> member genes among ``genes``, ranking order) and a table of every
        candidate set (``n_genes``, ``score``, ``kept``, ``reason``).

    Raises
    ------
    ValueError
        For an unknown ``rank_by``, or ``"variance"``/``"label"`` without ``X``/``labels``.
    """
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {', '.join(RANKINGS)}; got {rank_by!r}.")
    names = list(gene_sets)
    genes = list(map(str, genes))
    info = pd.DataFrame(index=pd.Index(names, name="gene_set"))
    if not names:
        info["n_genes"] = []
        return {}, info
    M = membership_matrix(gene_sets, genes)
    n = np.asarray(M.sum(axis=1)).ravel().astype(int)
    info["n_genes"] = n
    info["size_in_file"] = [len(gene_sets[k]) for k in names]
    ok = (n >= min_size) & (n <= max_size)
    reason = np.where(n < min_size, f"fewer than {min_size} shared genes",
                      np.where(n > max_size, f"more than {max_size} shared genes", ""))

    score = np.full(len(names), np.nan)
    cand = np.flatnonzero(ok)
    if rank_by in ("variance", "label") and cand.size:
        if X is None:
            raise ValueError(f"rank_by={rank_by!r} needs X (cells x genes, log-normalised).")
        Mc = M[cand]
        Mc = sp.diags(1.0 / n[cand]) @ Mc  # mean over members
        S = np.asarray((sp.csr_matrix(X) @ Mc.T.tocsc()).todense() if sp.issparse(X)
                       else np.asarray(X) @ Mc.T.toarray())  # cells x candidate sets
        total = S.var(axis=0)
        if rank_by == "variance":
            score[cand] = total
        else:
            if labels is None:
                raise ValueError("rank_by='label' needs labels.")
            order, best = _label_round_robin(S, np.asarray(labels).astype(str))
            # score = best one-vs-rest Welch t over labels; order interleaves the labels
            score[cand] = best
            rr = cand[order]
    elif rank_by == "coverage":
        score[cand] = n[cand]
    elif rank_by == "none":
        score[cand] = -np.arange(cand.size, dtype=float)
    info["score"] = score
    if rank_by == "label" and cand.size:
        order = rr
    else:
        order = cand[np.argsort(-score[cand], kind="stable")]

    kept: list[int] = []
    rows = [M.indices[M.indptr[i]:M.indptr[i + 1]] for i in range(M.shape[0])]
    limit = np.inf if max_sets is None else int(max_sets)
    cap = min(len(order), 256 if max_sets is None else int(max_sets)) or 1
    kept_mat = np.zeros((cap, len(genes)), dtype=np.float32)  # rows: kept sets (binary), grown as needed
    kept_n = np.zeros(cap)
    for i in order:
        if len(kept) >= limit:
            reason[i] = "over max_sets"
            continue
        k = len(kept)
        if max_overlap < 1 and k:
            inter = kept_mat[:k, rows[i]].sum(axis=1)
            jac = inter / (n[i] + kept_n[:k] - inter)
            if np.any(jac > max_overlap):
                reason[i] = f"overlaps a kept set (Jaccard > {max_overlap:g})"
                continue
        if k == kept_mat.shape[0]:
            kept_mat = np.vstack([kept_mat, np.zeros_like(kept_mat)])
            kept_n = np.concatenate([kept_n, np.zeros_like(kept_n)])
        kept.append(i)
        kept_mat[k, rows[i]] = 1.0
        kept_n[k] = n[i]
    info["kept"] = False
    info.iloc[kept, info.columns.get_loc("kept")] = True
    info["reason"] = reason
    out = {names[i]: [genes[j] for j in np.sort(rows[i])] for i in kept}
    logger.info("gene sets: %d of %d kept (%d with %d-%d shared genes; ranked by %s)",
                len(out), len(names), int(ok.sum()), min_size, max_size, rank_by)
    return out, info


def _label_round_robin(S: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order of columns of ``S`` (cells x sets): labels take turns picking their next set by
    one-vs-rest Welch t (higher in the label). Returns (order, best t of each set)."""
    cats, codes = np.unique(labels, return_inverse=True)
    n_cells, n = S.shape
    ind = sp.csr_matrix((np.ones(n_cells), (codes, np.arange(n_cells))), shape=(len(cats), n_cells))
    cnt = np.asarray(ind.sum(axis=1)).ravel()
    s1 = np.asarray(ind @ S)  # per-label sums
    s2 = np.asarray(ind @ (S * S))
    t1, t2 = S.sum(axis=0), (S * S).sum(axis=0)
    T = np.full((len(cats), n), -np.inf)
    for i in range(len(cats)):
        na, nb = cnt[i], n_cells - cnt[i]
        if na < 2 or nb < 2:
            continue
        ma, mb = s1[i] / na, (t1 - s1[i]) / nb
        va = np.maximum(s2[i] - na * ma ** 2, 0) / (na - 1)
        vb = np.maximum((t2 - s2[i]) - nb * mb ** 2, 0) / (nb - 1)
        T[i] = (ma - mb) / np.maximum(np.sqrt(va / na + vb / nb), 1e-12)
    ranks = np.argsort(-T, axis=1, kind="stable")  # labels x sets
    flat = ranks.T.ravel()  # rank 0 of every label, then rank 1, ...
    _, first = np.unique(flat, return_index=True)
    order = flat[np.sort(first)]
    return order.astype(int), T.max(axis=0)
