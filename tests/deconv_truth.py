"""Ground truth for deconvolution on real lymph-node data (tests and benchmarks/bench_deconvolve.py).

The reference's cells are split in two halves per cell type; pseudo-spots are sums of known
numbers of cells of known types from one half, and are deconvolved with the other half as
reference. Proportions are compared with the truth (Pearson r, RMSE).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from conftest import shared_path

TRUTH_GENES, TRUTH_SPOTS = 1000, 100


def lymph_data():
    """(reference, visium, shared genes in reference order)."""
    ref = ad.read_h5ad(shared_path("lymphnode_reference.h5ad"))
    vis = ad.read_h5ad(shared_path("lymphnode_visium.h5ad"))
    genes = [g for g in ref.var_names if g in set(vis.var_names)]
    return ref, vis, genes


def truth_data(ref):
    """Pseudo-spots on the 1,000 most variable reference genes (on the 558 genes the reference
    shares with the Visium panel, which lacks the classic markers, both methods reach only
    r ~ 0.75; see benchmarks/bench_deconvolve.py)."""
    return pseudo_spots(ref, "cell_type", variable_genes(ref, TRUTH_GENES), n_spots=TRUTH_SPOTS, seed=0)


def pseudo_spots(ref, labels_key, genes, *, n_spots=200, seed=0, max_types=4, max_cells=8, depth=1.0):
    """Pseudo-spots from half of ``ref``'s cells; returns (spatial, other half, truth, cells per spot).

    Each spot holds 1..``max_types`` cell types, each with 1..``max_cells`` cells drawn from the
    spot half; its counts are the sum of those cells' counts (binomially thinned to ``depth``).
    ``truth`` holds the cell proportions (spots x types).
    """
    rng = np.random.default_rng(seed)
    lab = ref.obs[labels_key].astype(str).to_numpy()
    types = np.unique(lab)
    spot_idx, ref_idx = [], []
    for t in types:
        idx = rng.permutation(np.flatnonzero(lab == t))
        h = len(idx) // 2
        spot_idx.append(idx[:h])
        ref_idx.extend(idx[h:])
    x = ref[:, genes].X
    x = x.tocsr() if sp.issparse(x) else sp.csr_matrix(x)
    counts = np.zeros((n_spots, len(genes)))
    ncell = np.zeros((n_spots, len(types)))
    for s in range(n_spots):
        for j in rng.choice(len(types), size=rng.integers(1, max_types + 1), replace=False):
            n = rng.integers(1, max_cells + 1)
            ncell[s, j] = n
            counts[s] += np.asarray(x[rng.choice(spot_idx[j], size=n, replace=True)].sum(0)).ravel()
    if depth < 1:
        counts = rng.binomial(counts.astype(np.int64), depth)
    names = [f"spot{i}" for i in range(n_spots)]
    spatial = ad.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=pd.DataFrame(index=names),
                         var=pd.DataFrame(index=list(genes)))
    truth = pd.DataFrame(ncell / ncell.sum(1, keepdims=True), index=names, columns=types)
    return spatial, ref[np.sort(ref_idx)].copy(), truth, ncell.sum(1)


def score(estimate: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, float]:
    """Pearson r and RMSE of proportions (all spots x types) against the truth."""
    e = estimate.loc[truth.index, truth.columns].to_numpy().ravel()
    t = truth.to_numpy().ravel()
    return float(np.corrcoef(e, t)[0, 1]), float(np.sqrt(np.mean((e - t) ** 2)))


def b_marker_genes(ref, genes, n=10):
    """The ``n`` shared genes most specific to B cells in the reference (normalised means).

    The classic markers (MS4A1, CD79A, CR2) are not among this Visium panel's 2,000 genes.
    """
    x = ref[:, genes].X.toarray()
    x = x / x.sum(1, keepdims=True) * 1e4
    means = pd.DataFrame(x, columns=genes).groupby(ref.obs["cell_type"].astype(str).to_numpy()).mean()
    spec = (means.loc["B"] + 0.1) / (means.drop(index="B").max() + 0.1)
    return list(spec.sort_values(ascending=False).index[:n])


def variable_genes(ref, n):
    """The ``n`` most variable reference genes (labels not used).

    Cell Ranger's rule (as scanpy's ``flavor="cell_ranger"``): dispersion (variance / mean) of
    counts per 10,000, normalised within 20 bins of mean expression. Written with NumPy so the
    test does not start numba's OpenMP pool, which resets torch to all cores.
    """
    x = ref.X.toarray() if sp.issparse(ref.X) else np.asarray(ref.X)
    x = x / x.sum(1, keepdims=True) * 1e4
    mean, var = x.mean(0), x.var(0, ddof=1)
    ok = mean > 0
    disp = np.full(mean.shape, -np.inf)
    disp[ok] = np.log(var[ok] / mean[ok])
    bins = pd.qcut(pd.Series(mean), np.r_[np.arange(0, 100, 5), 100] / 100, duplicates="drop", labels=False)
    frame = pd.DataFrame({"disp": disp, "bin": bins})
    g = frame[ok].groupby("bin")["disp"]
    med = g.transform("median")
    mad = g.transform(lambda d: np.median(np.abs(d - np.median(d)))).replace(0, np.nan)
    norm = pd.Series(-np.inf, index=frame.index)
    norm[ok] = ((frame.loc[ok, "disp"] - med) / mad).fillna(0).to_numpy()
    top = np.argsort(-norm.to_numpy(), kind="stable")[:n]
    return list(ref.var_names[np.sort(top)])
