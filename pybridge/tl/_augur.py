"""Augur: which cell types respond most to a condition.

Skinnider et al. 2021, "Cell type prioritization in single-cell data", Nat Biotechnol 39:30
(R package ``Augur``, neurorestore/Augur; Python port: pertpy ``pt.tl.Augur``). For each cell
type, random forests tell perturbed from control cells on repeated, balanced subsamples; the mean
cross-validated AUC ranks how strongly the type responds.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_number, check_obs_level, clean_uns, is_verbose, logger, progress
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
    span: float = 0.75,
    filter_negative_residuals: bool = False,
    n_estimators: int = 100,
    max_features: int = 2,
    min_cells: int | None = None,
    n_jobs: int = 1,
    random_state: int = 0,
    key_added: str = "augur",
    device: str = "cpu",
    verbose: bool | None = None,
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
    span, filter_negative_residuals
        Variable genes (:func:`select_variance`): loess span (Augur's 0.75); keep genes with a
        positive residual instead of those above ``var_quantile``.
    min_cells
        Cell types with fewer cells than this in the control or the perturbed condition are
        skipped and reported in the table (default and minimum: ``subsample_size``).
    n_jobs
        Threads over (cell type, subsample) fits.
    random_state
        Seed of the subsamples, gene draws, folds and forests.
    key_added
        Where results go: ``obs[f"{key_added}_score"]`` (float64, each cell's type AUC, NaN for
        skipped types; ``augur_score`` by default, pertpy's name) and ``uns[key_added]`` =
        ``{"params": dict, "table": DataFrame}`` (pertpy keeps its per-type means in
        ``uns["augurpy_results"]["summary_metrics"]``, row ``mean_augur_score``).
    device
        Accepted for symmetry with the other jobs; Augur runs on CPU.
    verbose
        Progress lines over the subsample fits (``None``: ``pybridge.settings.verbosity``).

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
        no ``perturbed``, a bad ``device``; ``X`` / ``layer`` not raw counts (NaN, infinite,
        negative or non-integer values; Augur log-normalises the counts itself); numbers out of
        range (e.g. ``n_subsamples=0``, ``var_quantile=2``).

    Warns
    -----
    UserWarning
        When no cell type could be scored (every ``auc`` is NaN); the table says why per type.
    """
    t0 = time.perf_counter()
    check_cpu_device(device)
    cond = condition_labels(adata, condition_key)
    check_obs_level(adata, condition_key, control, what="control")
    control = str(control)
    types = cell_types(adata, cell_type_key)
    pert = one_perturbed(adata, condition_key, cond, control, perturbed)
    subsample_size = check_number("subsample_size", subsample_size, integer=True, minimum=2)
    n_subsamples = check_number("n_subsamples", n_subsamples, integer=True, minimum=1)
    folds = check_number("folds", folds, integer=True, minimum=2, maximum=subsample_size)
    feature_perc = check_number("feature_perc", feature_perc, minimum=0, maximum=1, exclusive_minimum=True)
    var_quantile = check_number("var_quantile", var_quantile, minimum=0, maximum=1)
    span = check_number("span", span, minimum=0, maximum=1, exclusive_minimum=True)
    n_estimators = check_number("n_estimators", n_estimators, integer=True, minimum=1)
    max_features = check_number("max_features", max_features, integer=True, minimum=1)
    min_cells = check_number("min_cells", min_cells, integer=True, minimum=1, allow_none=True)
    n_jobs = check_number("n_jobs", n_jobs, integer=True, minimum=-1)
    x = lognorm_counts(adata, layer, method="Augur")
    min_cells = subsample_size if min_cells is None else int(min_cells)
    seed = int(random_state)
    table = _augur(x, cond, types, control, pert, subsample_size=subsample_size, n_subsamples=n_subsamples,
                   folds=folds, feature_perc=feature_perc, var_quantile=var_quantile, span=span,
                   filter_negative_residuals=bool(filter_negative_residuals), n_estimators=n_estimators,
                   max_features=max_features, min_cells=min_cells, n_jobs=n_jobs, seed=seed, verbose=verbose)
    if table["auc"].isna().all():
        warnings.warn(
            f"augur: no cell type could be scored ({'; '.join(table['cell_type'] + ': ' + table['status'])}). "
            f"Each type needs at least min_cells={min_cells} cells in both {control!r} and {pert!r}: lower "
            "subsample_size / min_cells, or check condition_key and cell_type_key.", UserWarning, stacklevel=2)
    auc = dict(zip(table["cell_type"], table["auc"], strict=True))
    adata.obs[f"{key_added}_score"] = pd.Series(types, index=adata.obs_names).map(auc).astype(float).to_numpy()
    params = dict(method="augur", condition_key=condition_key, control=control, perturbed=pert,
                  cell_type_key=cell_type_key, layer=layer, subsample_size=subsample_size,
                  n_subsamples=n_subsamples, folds=folds, feature_perc=feature_perc, var_quantile=var_quantile,
                  span=span, filter_negative_residuals=bool(filter_negative_residuals), n_estimators=n_estimators, max_features=max_features, min_cells=min_cells,
                  random_state=seed, device="cpu", seconds=round(time.perf_counter() - t0, 3))
    adata.uns[key_added] = {"params": clean_uns(params), "table": table}
    if is_verbose(verbose):
        logger.info("augur: %d cell types in %.1f s", table.shape[0], params["seconds"])
    return table


def select_variance(x, *, var_quantile: float = 0.5, span: float = 0.75,
                    filter_negative_residuals: bool = False) -> np.ndarray:
    """Augur's variable-gene selection (R Augur's ``select_variance``, pertpy's ``Augur.select_variance``).

    Genes with zero variance are dropped; the coefficient-of-variation-like ratio ``mean / sd``
    (clipped to its 1-99 % quantiles, inclusive) is fitted by ``loess(cv ~ mean)`` and
    ``loess(cv ~ log(mean))`` (R's ``stats::loess`` defaults: degree 2, ``span``); Augur picks the
    model by ``lmtest::coxtest`` (which, on loess fits, compares the no-intercept linear models
    of the two predictors) and keeps the genes whose residual exceeds the ``var_quantile``
    quantile of the residuals (R's type-7 quantile), or is positive with
    ``filter_negative_residuals``. The loess is :func:`pybridge.pp.loess_fitted` (scikit-misc,
    the netlib ``dloess`` code R uses).

    Parameters
    ----------
    x
        Cells x genes log-normalised expression (dense or scipy sparse), one cell type's cells.
    var_quantile
        Residual quantile above which genes are kept (Augur's 0.5); ``>= 1``: every gene with
        non-zero variance.
    span
        loess span (R's and Augur's 0.75).
    filter_negative_residuals
        Keep genes with a positive residual instead of using ``var_quantile``.

    Returns
    -------
    numpy.ndarray
        Column indices (int, ascending) of the selected genes.
    """
    mean, sd = _mean_sd(x)
    return _select_from_stats(mean, sd, var_quantile=var_quantile, span=span,
                              filter_negative_residuals=filter_negative_residuals)


def _mean_sd(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and sample standard deviation (as ``sparseMatrixStats::rowSds``), float64."""
    from ..pp._array import mean_var

    x = sp.csr_matrix(x, dtype=np.float64) if sp.issparse(x) else sp.csr_matrix(np.asarray(x, dtype=np.float64))
    mean, var = mean_var(x, np)
    return np.asarray(mean, np.float64).ravel(), np.sqrt(np.maximum(np.asarray(var, np.float64).ravel(), 0))


def _select_from_stats(mean: np.ndarray, sd: np.ndarray, *, var_quantile: float, span: float,
                       filter_negative_residuals: bool) -> np.ndarray:
    """The part of ``select_variance`` after the per-gene means and standard deviations."""
    idx = np.flatnonzero(sd > 0)
    if not (var_quantile < 1 or filter_negative_residuals) or idx.size < 10:
        return idx
    cvs = mean[idx] / sd[idx]
    lower, upper = np.quantile(cvs, [0.01, 0.99])
    keep = (cvs >= lower) & (cvs <= upper)  # dplyr::between
    cv0, mean0, idx0 = cvs[keep], mean[idx][keep], idx[keep]
    if np.any(mean0 < 0):
        fitted = _loess_fitted(mean0, cv0, span)
    else:
        p = _cox_pvalues(mean0, np.log(mean0), cv0)
        fitted = _loess_fitted(mean0, cv0, span) if p[0] < p[1] else _loess_fitted(np.log(mean0), cv0, span)
    res = cv0 - fitted
    sel = res > 0 if filter_negative_residuals else res > np.quantile(res, var_quantile)
    return idx0[sel]


def _loess_fitted(x: np.ndarray, y: np.ndarray, span: float) -> np.ndarray:
    """``fitted(loess(y ~ x, span = span))`` with R's defaults (:func:`pybridge.pp.loess_fitted`,
    scikit-misc; where R only warns about near singularities the span is widened, with a warning)."""
    from ..pp._highly_variable_genes import loess_fitted

    return loess_fitted(x, y, span=span, name="augur")


def _cox_pvalues(x: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``lmtest::coxtest(loess(y ~ x), loess(y ~ z))$`Pr(>|z|)```: Cox tests of the non-nested
    no-intercept linear models ``y ~ x - 1`` and ``y ~ z - 1`` (lmtest reads a loess fit's
    ``$x`` matrix, which has no intercept column). Returns (p of "fitted(M1) ~ M2", p of
    "fitted(M2) ~ M1")."""
    from scipy.stats import norm

    def fit(a, b):  # lm.fit(matrix(a), b): fitted values and residuals
        a = np.asarray(a, np.float64)
        beta = float(a @ b) / float(a @ a)
        f = a * beta
        return f, b - f

    n = y.size
    xf, xr = fit(x, y)
    zf, zr = fit(z, y)
    s2x, s2z = np.mean(xr**2), np.mean(zr**2)
    _, zx_r = fit(z, xf)
    s2zx = s2x + np.mean(zx_r**2)
    _, xz_r = fit(x, zf)
    s2xz = s2z + np.mean(xz_r**2)
    _, xzx_r = fit(x, zx_r)
    s2xzx = np.mean(xzx_r**2)
    _, zxz_r = fit(z, xz_r)
    s2zxz = np.mean(zxz_r**2)
    c01 = n / 2 * np.log(s2z / s2zx)
    v01 = n * (s2x / s2zx**2) * s2xzx
    c10 = n / 2 * np.log(s2x / s2xz)
    v10 = n * (s2z / s2xz**2) * s2zxz
    stat = np.array([c01 / np.sqrt(v01), c10 / np.sqrt(v10)])
    p = 2 * norm.sf(np.abs(stat))
    return float(p[0]), float(p[1])


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


def _augur(x, cond, types, control, pert, *, subsample_size, n_subsamples, folds, feature_perc, var_quantile, span,
           filter_negative_residuals, n_estimators, max_features, min_cells, n_jobs, seed, verbose) -> pd.DataFrame:
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
        feats = select_variance(xt, var_quantile=var_quantile, span=span,
                                filter_negative_residuals=filter_negative_residuals)
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
    n_ok = sum(r["status"] == "ok" for r in rows)
    if is_verbose(verbose):
        logger.info("augur: %d of %d cell types scorable, %d subsample fits (%d folds x %d trees each)", n_ok,
                    len(rows), len(tasks), folds, n_estimators)
    gen = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
        delayed(_augur_one)(xt, y, f, a, b, subsample_size=subsample_size, feature_perc=feature_perc, folds=folds,
                            n_estimators=n_estimators, max_features=max_features, seed=sd)
        for (_, xt, y, f, a, b, sd) in tasks
    )
    res = list(progress(gen, total=len(tasks), desc="augur: subsample fits", verbose=verbose))
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
