"""Augur: which cell types respond most to a condition.

Skinnider et al. 2021, "Cell type prioritization in single-cell data", Nat Biotechnol 39:30
(R package ``Augur``, neurorestore/Augur; Python port: pertpy ``pt.tl.Augur``). For each cell
type, random forests tell perturbed from control cells on repeated, balanced subsamples; the mean
cross-validated AUC ranks how strongly the type responds.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_obs_level, clean_uns, logger
from ._perturbation_utils import cell_types, check_cpu_device, condition_labels, lognorm_counts, one_perturbed


def augur(
    adata,
    condition_key: str,
    control: str,
    *,
    perturbed: str | None = None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    subsample_size: int = 20,
    n_subsamples: int = 50,
    folds: int = 3,
    feature_perc: float = 0.5,
    var_quantile: float = 0.5,
    n_estimators: int = 100,
    max_features: int = 2,
    min_cells: int | None = None,
    n_jobs: int = 1,
    random_state: int = 0,
    key_added: str = "augur",
    device: str = "cpu",
) -> pd.DataFrame:
    """Rank cell types by how separable their perturbed and control cells are (Augur).

    Counts (``X`` or ``layer``) are log-normalised (counts per 10,000, ``log1p``, as Seurat's
    ``NormalizeData``); the caller's matrices are not modified. For each cell type with at least
    ``min_cells`` cells in both conditions: Augur's variable-gene selection (``select_variance``,
    a loess fit of the coefficient of variation against the mean, genes above the
    ``var_quantile`` of the residuals), then ``n_subsamples`` times: draw ``subsample_size``
    cells per condition and ``feature_perc`` of the variable genes, and a ``folds``-fold
    cross-validated random forest (scikit-learn, ``n_estimators`` trees, ``max_features`` genes
    per split) gives an AUC; the type's score is the mean AUC.

    Parameters
    ----------
    adata
        :class:`~anndata.AnnData`, cells x genes, raw counts in ``X`` or ``layer``.
    condition_key
        Column of ``obs`` with the condition (e.g. ``"stim"``; pertpy: ``label_col``).
    control
        The control level of ``condition_key`` (e.g. ``"CTRL"``).
    perturbed
        The perturbed level (default: the single level other than ``control``; required when
        there are several).
    cell_type_key
        Column of ``obs`` with cell types (pertpy: ``cell_type_col``); ``None``: all cells form
        one group ``"all"``.
    layer
        Layer holding the counts (``None``: ``X``).
    subsample_size, n_subsamples, folds, feature_perc, var_quantile, n_estimators, max_features
        Augur's defaults: 20 cells per condition per subsample, 50 subsamples, 3 folds, half of
        the variable genes per subsample, genes above the median loess residual, 100 trees,
        2 genes tried per split.
    min_cells
        Cell types with fewer cells than this in the control or the perturbed condition are
        skipped and reported in the table (default and minimum: ``subsample_size``).
    n_jobs
        Threads over (cell type, subsample) fits.
    random_state
        Seed of the subsamples, gene draws, folds and forests.
    key_added
        Where results go: ``obs[f"{key_added}_auc"]`` (float64, each cell's type AUC, NaN for
        skipped types) and ``uns[key_added]`` = ``{"params": dict, "table": DataFrame}``.
    device
        Accepted for symmetry with the other jobs; Augur runs on CPU.

    Returns
    -------
    pandas.DataFrame
        One row per cell type, best first: ``cell_type``, ``auc`` (mean AUC over subsamples;
        pertpy's ``mean_augur_score``), ``auc_sd``, ``rank``, ``n_control``, ``n_perturbed``,
        ``n_genes`` (variable genes selected), ``status`` (``"ok"`` or why the type was skipped,
        e.g. ``"skipped: fewer than 20 cells per condition (4 CTRL, 11 STIM)"``; its ``auc`` is
        NaN).

    Raises
    ------
    KeyError
        ``condition_key``, ``cell_type_key`` or ``layer`` missing (lists what exists).
    ValueError
        ``control`` / ``perturbed`` not a level (lists the levels), several perturbed levels and
        no ``perturbed``, a bad ``device``.
    """
    t0 = time.perf_counter()
    check_cpu_device(device)
    cond = condition_labels(adata, condition_key)
    check_obs_level(adata, condition_key, control, what="control")
    control = str(control)
    types = cell_types(adata, cell_type_key)
    pert = one_perturbed(adata, condition_key, cond, control, perturbed)
    x = lognorm_counts(adata, layer, method="Augur")
    min_cells = subsample_size if min_cells is None else int(min_cells)
    seed = int(random_state)
    table = _augur(x, cond, types, control, pert, subsample_size=subsample_size, n_subsamples=n_subsamples,
                   folds=folds, feature_perc=feature_perc, var_quantile=var_quantile, n_estimators=n_estimators,
                   max_features=max_features, min_cells=min_cells, n_jobs=n_jobs, seed=seed)
    auc = dict(zip(table["cell_type"], table["auc"], strict=True))
    adata.obs[f"{key_added}_auc"] = pd.Series(types, index=adata.obs_names).map(auc).astype(float).to_numpy()
    params = dict(method="augur", condition_key=condition_key, control=control, perturbed=pert,
                  cell_type_key=cell_type_key, layer=layer, subsample_size=subsample_size,
                  n_subsamples=n_subsamples, folds=folds, feature_perc=feature_perc, var_quantile=var_quantile,
                  n_estimators=n_estimators, max_features=max_features, min_cells=min_cells,
                  random_state=seed, device="cpu", seconds=round(time.perf_counter() - t0, 3))
    adata.uns[key_added] = {"params": clean_uns(params), "table": table}
    logger.info("augur: %d cell types in %.1f s", table.shape[0], params["seconds"])
    return table


def _select_variance(x: sp.csr_matrix, var_quantile: float) -> np.ndarray:
    """Augur's ``select_variance``: genes above the ``var_quantile`` of the loess residuals of the
    mean / sd ratio against the mean (or log mean). Returns column indices."""
    from statsmodels.nonparametric.smoothers_lowess import lowess

    n = x.shape[0]
    mean = np.asarray(x.mean(axis=0)).ravel().astype(np.float64)
    sq = np.asarray(x.multiply(x).mean(axis=0)).ravel().astype(np.float64)
    var = np.maximum(sq - mean**2, 0) * (n / max(n - 1, 1))
    sd = np.sqrt(var)
    idx = np.flatnonzero(sd > 0)
    if var_quantile >= 1 or idx.size < 10:
        return idx
    cvs = mean[idx] / sd[idx]  # as in Augur (R): means / sds
    lo, hi = np.quantile(cvs, [0.01, 0.99])
    keep = (cvs >= lo) & (cvs <= hi)
    cv0, m0, idx0 = cvs[keep], mean[idx][keep], idx[keep]
    best = None
    for xv in (m0, np.log(m0)):  # Augur compares the raw and log-mean fits (Cox test); we keep the better fit
        delta = 0.01 * float(xv.max() - xv.min())
        fit = lowess(cv0, xv, frac=0.75, it=0, delta=delta, return_sorted=False)
        res = cv0 - fit
        rss = float(np.nansum(res**2))
        if best is None or rss < best[0]:
            best = (rss, res)
    res = np.nan_to_num(best[1], nan=-np.inf)
    return idx0[res > np.quantile(res[np.isfinite(res)], var_quantile)]


def _augur_one(xt, y, feats, n_ctrl_idx, n_pert_idx, *, subsample_size, feature_perc, folds, n_estimators,
               max_features, seed):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    f = rng.choice(feats, size=max(2, int(math.floor(len(feats) * feature_perc))), replace=False)
    cells = np.concatenate([rng.choice(n_ctrl_idx, subsample_size, replace=False),
                            rng.choice(n_pert_idx, subsample_size, replace=False)])
    xs = xt[cells][:, f].toarray()
    xs = xs[:, xs.var(axis=0) > 0]
    ys = y[cells]
    if xs.shape[1] == 0:
        return 0.5
    aucs = []
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % (2**31))
    for k, (tr, te) in enumerate(cv.split(xs, ys)):
        rf = RandomForestClassifier(n_estimators=n_estimators, max_features=min(max_features, xs.shape[1]),
                                    random_state=(seed + k) % (2**31), n_jobs=1)
        rf.fit(xs[tr], ys[tr])
        aucs.append(roc_auc_score(ys[te], rf.predict_proba(xs[te])[:, 1]))
    return float(np.mean(aucs))


def _augur(x, cond, types, control, pert, *, subsample_size, n_subsamples, folds, feature_perc, var_quantile,
           n_estimators, max_features, min_cells, n_jobs, seed) -> pd.DataFrame:
    from joblib import Parallel, delayed

    min_cells = max(int(min_cells), int(subsample_size))
    rows, tasks = [], []
    for ti, t in enumerate(sorted(set(types.tolist()) - {"nan"})):
        in_t = types == t
        ic = np.flatnonzero(in_t & (cond == control))
        ip = np.flatnonzero(in_t & (cond == pert))
        row = dict(cell_type=t, auc=np.nan, auc_sd=np.nan, n_control=ic.size, n_perturbed=ip.size, n_genes=0,
                   status="ok")
        if min(ic.size, ip.size) < min_cells:
            row["status"] = (f"skipped: fewer than {min_cells} cells per condition "
                             f"({ic.size} {control}, {ip.size} {pert})")
            rows.append(row)
            continue
        cells = np.concatenate([ic, ip])
        xt = x[cells]
        y = np.r_[np.zeros(ic.size, int), np.ones(ip.size, int)]
        feats = _select_variance(xt, var_quantile)
        row["n_genes"] = int(feats.size)
        if feats.size < 2:
            row["status"] = "skipped: fewer than 2 variable genes"
            rows.append(row)
            continue
        xt = sp.csr_matrix(xt)
        for s in range(n_subsamples):
            tasks.append((len(rows), xt, y, feats, np.arange(ic.size), np.arange(ic.size, cells.size),
                          seed * 1_000_003 + ti * 10_007 + s))
        rows.append(row)
    logger.info("augur: %d cell types, %d subsample fits", len(rows), len(tasks))
    res = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_augur_one)(xt, y, f, a, b, subsample_size=subsample_size, feature_perc=feature_perc, folds=folds,
                            n_estimators=n_estimators, max_features=max_features, seed=sd)
        for (_, xt, y, f, a, b, sd) in tasks
    )
    per = {}
    for (r, *_), auc in zip(tasks, res, strict=True):
        per.setdefault(r, []).append(auc)
    for r, v in per.items():
        rows[r]["auc"] = float(np.mean(v))
        rows[r]["auc_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    df = pd.DataFrame(rows, columns=["cell_type", "auc", "auc_sd", "n_control", "n_perturbed", "n_genes", "status"])
    df = df.sort_values("auc", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    df.insert(3, "rank", df["auc"].rank(ascending=False, method="min"))
    return df
