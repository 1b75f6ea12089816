"""Perturbation scoring: responding cell types, knockout calls, in-silico gene deletion.

Three published methods behind one job, :func:`score_perturbation`:

- ``method="augur"``: Augur (Skinnider et al. 2021, Nat Biotechnol 39:30): which cell types
  respond most to a condition, by how well a random forest separates condition from control
  cells of that type (cross-validated AUC on repeated, balanced subsamples).
- ``method="mixscape"``: Mixscape (Papalexi et al. 2021, Nat Genet 53:322; Seurat
  ``CalcPerturbSig`` + ``RunMixscape``, pertpy ``Mixscape``): which guide-carrying cells of a
  CRISPR screen were really knocked out (KO) and which escaped (NP).
- ``method="insilico"``: in-silico deletion (Theodoris et al. 2023, Nature 618:616,
  Geneformer): with a trained encoder, which genes, when deleted, move cells towards a goal
  state (e.g. stimulated monocytes towards control monocytes), compared with deleting random
  genes of matched expression.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._device import resolve_device
from .._core import check_counts, check_obs_key, check_obs_level, get_matrix, logger, shared_genes

_METHODS = ("augur", "mixscape", "insilico")


# --------------------------------------------------------------------------------------------
# public job
# --------------------------------------------------------------------------------------------
def score_perturbation(
    adata,
    *,
    condition_key: str,
    control: str,
    method: str = "augur",
    perturbed: str | Sequence[str] | None = None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    key_added: str | None = None,
    device: str = "auto",
    random_state: int = 0,
    # augur
    subsample_size: int = 20,
    n_subsamples: int = 50,
    folds: int = 3,
    feature_perc: float = 0.5,
    var_quantile: float = 0.5,
    n_estimators: int = 100,
    max_features: int = 2,
    min_cells: int | None = None,
    n_jobs: int = 1,
    # mixscape
    split_key: str | None = None,
    n_neighbors: int = 20,
    n_pcs: int = 40,
    logfc_threshold: float = 0.25,
    pval_cutoff: float = 0.05,
    min_pct: float = 0.1,
    min_de_genes: int = 5,
    iter_num: int = 10,
    # insilico
    model=None,
    genes: str | Sequence[str] | None = None,
    groups: str | Sequence[str] | None = None,
    goal: str | None = None,
    n_random: int = 50,
    max_cells: int | None = 500,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Score a perturbation: responding cell types, knockout calls or in-silico deletions.

    Every method takes raw counts (``X`` or ``layer``); Augur and Mixscape log-normalise them
    (counts per 10,000, ``log1p``, as Seurat's ``NormalizeData``); a matrix that is already
    log-normalised (non-integer) is used as it is for those two. The caller's matrices are never
    modified.

    Parameters
    ----------
    adata
        :class:`~anndata.AnnData`, cells x genes.
    condition_key
        Column of ``obs`` with the condition (Augur, in-silico: e.g. ``"stim"``) or the guide
        target of each cell (Mixscape: e.g. ``"top_grna_target"``).
    control
        The control level of ``condition_key`` (``"CTRL"``; Mixscape: the non-targeting label).
    method
        ``"augur"``, ``"mixscape"`` or ``"insilico"``.
    perturbed
        Levels of ``condition_key`` to score. Augur / in-silico: the one perturbed condition
        (default: the single level other than ``control``; required when there are several).
        Mixscape: the targets to classify (default: every level other than ``control``).
    cell_type_key
        Column of ``obs`` with cell types. Augur scores each type; in-silico deletes within each
        type and uses the goal cells of the same type. ``None``: all cells form one group.
    layer
        Layer holding the counts (``None``: ``X``).
    key_added
        Prefix of the results (default: the method name). Augur writes ``obs[f"{key}_auc"]``;
        Mixscape writes ``obs[f"{key}_class"]``, ``obs[f"{key}_class_global"]``,
        ``obs[f"{key}_class_p_ko"]`` (``mixscape_class`` ... with the default key); all write
        ``uns[key]`` = ``{"params": ..., "table": DataFrame, ...}``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``. Used by the in-silico encoder; Augur and Mixscape
        run on CPU (scikit-learn) on any device.
    random_state
        Seed of every random choice (subsamples, forests, random genes).
    subsample_size, n_subsamples, folds, feature_perc, var_quantile, n_estimators, max_features
        Augur: cells drawn per condition in each subsample (20), number of subsamples (50),
        cross-validation folds (3), fraction of the variable genes drawn per subsample (0.5),
        quantile of the loess residual of the mean / sd trend above which genes are kept (0.5),
        trees (100) and genes tried per split (2) of the random forest; Augur's defaults.
    min_cells
        Augur: cell types with fewer cells than this in the control or the perturbed condition are
        skipped and reported in the table (default ``subsample_size``). In-silico: groups with
        fewer perturbed or goal cells are skipped (default 5).
    n_jobs
        Augur: threads over (cell type, subsample) tasks.
    split_key
        Mixscape: ``obs`` column of replicates; nearest non-targeting neighbours are found within
        each replicate (Seurat's ``split.by``).
    n_neighbors, n_pcs
        Mixscape: non-targeting neighbours per cell (20) in a PCA of this many components (40, as
        the Papalexi vignette) for the perturbation signature.
    logfc_threshold, pval_cutoff, min_pct, min_de_genes, iter_num
        Mixscape: a target's genes are those differentially expressed between its cells and the
        non-targeting cells (Wilcoxon, Bonferroni-adjusted ``p < pval_cutoff``, ``|log2 FC| >=
        logfc_threshold``, detected in ``>= min_pct`` of either group); targets with fewer than
        ``min_de_genes`` genes are all NP; at most ``iter_num`` mixture refits.
    model
        In-silico: the encoder, a directory saved by :func:`pybridge.tl.integrate_scvi`
        (``save_path=``) or scvi-tools ``model.save()``, a pybridge TOSICA directory, a loaded
        scvi-tools model, or an object with ``.genes`` and ``.embed(adata)``
        (:mod:`pybridge.tl._encoders`).
    genes
        In-silico: genes to delete (set to zero), each scored separately.
    groups
        In-silico: cell types (levels of ``cell_type_key``) to score (default: all).
    goal
        In-silico: level of ``condition_key`` whose mean embedding (per group) is the goal state
        (default: ``control``).
    n_random
        In-silico: random genes of matched mean expression deleted per tested gene (the null).
    max_cells
        In-silico: at most this many perturbed cells per group (random subsample; ``None``: all).
    batch_size
        In-silico: cells per encoder forward pass.

    Returns
    -------
    pandas.DataFrame
        The results table, also in ``uns[key_added]["table"]``:

        - augur: one row per cell type, ``cell_type, auc, auc_sd, rank, n_control,
          n_perturbed, n_genes, status`` (``status`` says ``"ok"`` or why a type was skipped,
          e.g. ``"skipped: fewer than 20 cells per condition (4 CTRL, 11 STIM)"``; its ``auc``
          is NaN).
        - mixscape: one row per target, ``target, n_cells, n_de_genes, n_ko, n_np,
          ko_fraction, status``.
        - insilico: one row per (gene, group): ``gene, group, n_cells`` (cells expressing the
          gene), ``mean_expression`` (log-normalised, perturbed cells), ``cosine_shift`` (mean
          ``1 - cos(z, z_deleted)``), ``goal_shift`` (mean change of cosine similarity to the
          goal mean embedding; > 0 = towards the goal), ``goal_distance_change`` (mean
          reduction of the Euclidean distance to the goal mean), the same for the matched random
          genes (``*_null_mean``), ``goal_shift_z``, ``goal_shift_rank`` (1 = beats every
          random gene), ``n_null``, empirical ``cosine_shift_pval`` and ``goal_shift_pval``
          (one-sided, ``(1 + #null >= observed) / (1 + n_null)``), ``status``.

    Raises
    ------
    KeyError
        ``condition_key`` / ``cell_type_key`` / ``split_key`` / ``layer`` missing (lists what exists).
    ValueError
        ``control`` (or ``perturbed`` / ``goal`` / ``groups``) not a level (lists the levels); an
        unknown ``method``; genes to delete not in the data or not among the model's genes
        (names them); data and model sharing too few genes; no counts for in-silico.
    """
    t0 = time.perf_counter()
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}.")
    check_obs_key(adata, condition_key, what="condition_key")
    check_obs_level(adata, condition_key, control, what="control")
    if cell_type_key is not None:
        check_obs_key(adata, cell_type_key, what="cell_type_key")
    # Augur and Mixscape run on CPU (scikit-learn): check the value without importing torch
    dev = resolve_device(device) if method == "insilico" else _check_device(device)
    key = key_added or method
    cond = adata.obs[condition_key].astype("object").astype(str).to_numpy()
    cond[adata.obs[condition_key].isna().to_numpy()] = "nan"
    control = str(control)
    rng_seed = int(random_state)

    if method == "augur":
        pert = _one_perturbed(adata, condition_key, cond, control, perturbed)
        x = _lognorm(get_matrix(adata, layer))
        types = _types(adata, cell_type_key)
        table = _augur(
            x, cond, types, control, pert, subsample_size=subsample_size, n_subsamples=n_subsamples,
            folds=folds, feature_perc=feature_perc, var_quantile=var_quantile, n_estimators=n_estimators,
            max_features=max_features, min_cells=subsample_size if min_cells is None else int(min_cells),
            n_jobs=n_jobs, seed=rng_seed,
        )
        auc = dict(zip(table["cell_type"], table["auc"], strict=True))
        adata.obs[f"{key}_auc"] = pd.Series(types, index=adata.obs_names).map(auc).astype(float).to_numpy()
        params = dict(method=method, condition_key=condition_key, control=control, perturbed=pert,
                      cell_type_key=cell_type_key, layer=layer, subsample_size=subsample_size,
                      n_subsamples=n_subsamples, folds=folds, feature_perc=feature_perc,
                      var_quantile=var_quantile, n_estimators=n_estimators, max_features=max_features,
                      min_cells=subsample_size if min_cells is None else int(min_cells),
                      random_state=rng_seed, device="cpu")
        extra = {}
    elif method == "mixscape":
        if split_key is not None:
            check_obs_key(adata, split_key, what="split_key")
        targets = _targets(adata, condition_key, cond, control, perturbed)
        x = _lognorm(get_matrix(adata, layer))
        split = None if split_key is None else adata.obs[split_key].astype(str).to_numpy()
        cls, glob, pko, table, extra = _mixscape(
            x, np.asarray(adata.var_names).astype(str), cond, control, targets, split,
            n_neighbors=n_neighbors, n_pcs=n_pcs, logfc_threshold=logfc_threshold, pval_cutoff=pval_cutoff,
            min_pct=min_pct, min_de_genes=min_de_genes, iter_num=iter_num, seed=rng_seed,
        )
        adata.obs[f"{key}_class"] = pd.Categorical(cls)
        adata.obs[f"{key}_class_global"] = pd.Categorical(glob, categories=[c for c in ("NT", "NP", "KO")
                                                                            if c in set(glob.tolist())])
        adata.obs[f"{key}_class_p_ko"] = pko
        params = dict(method=method, condition_key=condition_key, control=control, targets=list(targets),
                      split_key=split_key, layer=layer, n_neighbors=n_neighbors, n_pcs=n_pcs,
                      logfc_threshold=logfc_threshold, pval_cutoff=pval_cutoff, min_pct=min_pct,
                      min_de_genes=min_de_genes, iter_num=iter_num, random_state=rng_seed, device="cpu")
    else:
        pert = _one_perturbed(adata, condition_key, cond, control, perturbed)
        goal_level = control if goal is None else str(goal)
        check_obs_level(adata, condition_key, goal_level, what="goal")
        if model is None:
            raise ValueError(
                "method='insilico' needs model=: a directory saved by pybridge.tl.integrate_scvi(save_path=...) "
                "(or scvi-tools model.save()), a pybridge TOSICA directory, or a loaded model."
            )
        if genes is None or (not isinstance(genes, str) and len(genes) == 0):
            raise ValueError("method='insilico' needs genes=: the genes to delete (e.g. ['ISG15', 'MX1']).")
        genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
        from ._encoders import load_encoder

        encoder = load_encoder(model, device=dev)
        table, extra = _insilico(
            adata, layer, encoder, cond, _types(adata, cell_type_key), cell_type_key, pert, goal_level, genes,
            groups=groups, n_random=n_random, max_cells=max_cells,
            min_cells=5 if min_cells is None else int(min_cells), seed=rng_seed,
        )
        params = dict(method=method, condition_key=condition_key, control=control, perturbed=pert,
                      goal=goal_level, cell_type_key=cell_type_key, layer=layer, genes=genes,
                      n_random=n_random, max_cells=max_cells, random_state=rng_seed, device=dev,
                      encoder=encoder.describe())
    params["seconds"] = round(time.perf_counter() - t0, 3)
    adata.uns[key] = {"params": _clean(params), "table": table, **extra}
    logger.info("score_perturbation(%s): %d rows in %.1f s", method, table.shape[0], params["seconds"])
    return table


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
def _clean(d):
    """uns-safe copy: drop None, lists of str, nested dicts."""
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if v is not None}
    if isinstance(d, (list, tuple)):
        return [str(v) for v in d]
    return d


def _check_device(device) -> str:
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda' (or 'cuda:N'), got {device!r}.")
    return "cpu"


def _levels(cond: np.ndarray) -> list[str]:
    return sorted(set(cond.tolist()) - {"nan"})


def _one_perturbed(adata, key, cond, control, perturbed) -> str:
    if perturbed is not None and not isinstance(perturbed, str):
        perturbed = list(perturbed)
        if len(perturbed) != 1:
            raise ValueError(f"perturbed must name one level of obs[{key!r}] for this method, got {perturbed}.")
        perturbed = perturbed[0]
    if perturbed is None:
        others = [lv for lv in _levels(cond) if lv != control]
        if len(others) != 1:
            raise ValueError(
                f"obs[{key!r}] has {len(others)} levels besides the control {control!r} "
                f"({', '.join(others) or 'none'}); pass perturbed= naming the one to compare with the control."
            )
        return others[0]
    check_obs_level(adata, key, perturbed, what="perturbed")
    if str(perturbed) == control:
        raise ValueError(f"perturbed and control are the same level ({control!r}).")
    return str(perturbed)


def _targets(adata, key, cond, control, perturbed) -> list[str]:
    if perturbed is None:
        t = [lv for lv in _levels(cond) if lv != control]
        if not t:
            raise ValueError(f"obs[{key!r}] has no level besides the control {control!r}.")
        return t
    perturbed = [perturbed] if isinstance(perturbed, str) else list(perturbed)
    for p in perturbed:
        check_obs_level(adata, key, p, what="target")
    return [str(p) for p in perturbed if str(p) != control]


def _types(adata, key) -> np.ndarray:
    if key is None:
        return np.full(adata.n_obs, "all", dtype=object)
    s = adata.obs[key]
    out = s.astype("object").astype(str).to_numpy()
    out[s.isna().to_numpy()] = "nan"
    return out


def _is_counts(x, sample: int = 200_000) -> bool:
    v = x.data if sp.issparse(x) else np.asarray(x).ravel()
    if v.size > sample:
        v = v[:: v.size // sample]
    return bool(v.size == 0 or (np.all(np.isfinite(v)) and v.min() >= 0 and np.all(v == np.round(v))))


def _lognorm(x) -> sp.csr_matrix:
    """Counts -> log1p(counts / total * 1e4) as a new CSR float32 (Seurat LogNormalize)."""
    x = sp.csr_matrix(x, dtype=np.float32, copy=True) if sp.issparse(x) else sp.csr_matrix(np.asarray(x, np.float32))
    if not _is_counts(x):
        logger.info("the matrix is not integer counts; using it as log-normalised expression")
        return x
    tot = np.asarray(x.sum(axis=1)).ravel()
    tot[tot == 0] = 1
    x = sp.diags((1e4 / tot).astype(np.float32)) @ x
    x = sp.csr_matrix(x)
    np.log1p(x.data, out=x.data)
    return x


# --------------------------------------------------------------------------------------------
# Augur
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Mixscape
# --------------------------------------------------------------------------------------------
def _gmm_class():
    from sklearn.mixture import GaussianMixture

    class _FixedFirstGMM(GaussianMixture):
        """Two-component 1-d mixture whose first (non-targeting) component keeps a fixed mean and
        variance, as Seurat's ``normalmixEM(mean.constr = c(nt.mu, NA), sd.constr = c(nt.sd, NA))``."""

        def __init__(self, n_components=2, *, covariance_type="spherical", tol=1e-3, reg_covar=1e-6,
                     max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
                     precisions_init=None, random_state=None, warm_start=False, verbose=0, verbose_interval=10,
                     fixed_mean=0.0, fixed_var=1.0):
            super().__init__(n_components=n_components, covariance_type=covariance_type, tol=tol,
                             reg_covar=reg_covar, max_iter=max_iter, n_init=n_init, init_params=init_params,
                             weights_init=weights_init, means_init=means_init, precisions_init=precisions_init,
                             random_state=random_state, warm_start=warm_start, verbose=verbose,
                             verbose_interval=verbose_interval)
            self.fixed_mean = fixed_mean
            self.fixed_var = fixed_var

        def _m_step(self, X, log_resp, *args, **kwargs):
            super()._m_step(X, log_resp, *args, **kwargs)
            self.means_[0, 0] = self.fixed_mean
            self.covariances_[0] = self.fixed_var
            self.precisions_cholesky_ = 1.0 / np.sqrt(self.covariances_)

    return _FixedFirstGMM


def _norm_logpdf(x, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def _mixscape(x, var_names, cond, control, targets, split, *, n_neighbors, n_pcs, logfc_threshold, pval_cutoff,
              min_pct, min_de_genes, iter_num, seed):
    import anndata as ad
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    n, g = x.shape
    nt = cond == control
    # 1. DE genes of each target vs NT (Seurat FindMarkers: Wilcoxon, Bonferroni, |avg log2FC|, min.pct)
    de = _mixscape_markers(x, var_names, cond, control, targets, logfc_threshold=logfc_threshold,
                           pval_cutoff=pval_cutoff, min_pct=min_pct, min_de_genes=min_de_genes)
    used = sorted(set(np.concatenate([v for v in de.values()] + [np.zeros(0, int)]).tolist()))
    # 2. perturbation signature on those genes: expression - log1p(mean(expm1) of k nearest NT cells in PCA)
    sig = np.zeros((n, len(used)), dtype=np.float32)
    if used:
        a = ad.AnnData(X=x.copy(), obs=pd.DataFrame(index=pd.Index(np.arange(n).astype(str))))
        if g > 2000:
            sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat")
            a = a[:, a.var["highly_variable"].to_numpy()].copy()
        xs = a.X.toarray()
        xs -= xs.mean(axis=0)
        sdv = xs.std(axis=0, ddof=1)
        sdv[sdv == 0] = 1
        xs /= sdv
        np.clip(xs, -10, 10, out=xs)  # Seurat ScaleData / sc.pp.scale(max_value=10)
        k = int(min(n_pcs, xs.shape[1] - 1, n - 1))
        pcs = sc.pp.pca(xs, n_comps=k, random_state=seed)
        xu = x[:, used]
        splits = [np.ones(n, bool)] if split is None else [split == s for s in sorted(set(split.tolist()))]
        for m in splits:
            ntm = np.flatnonzero(m & nt)
            cells = np.flatnonzero(m)
            if ntm.size == 0:
                raise ValueError("a split (split_key level) has no non-targeting cells; "
                                 "drop split_key or fix the labels.")
            kk = min(n_neighbors, ntm.size)
            nn = NearestNeighbors(n_neighbors=kk).fit(pcs[ntm])
            ind = nn.kneighbors(pcs[cells], return_distance=False)
            w = sp.csr_matrix((np.full(ind.size, 1.0 / kk), (np.repeat(np.arange(cells.size), kk), ind.ravel())),
                              shape=(cells.size, ntm.size))
            ref = np.log1p(sp.csr_matrix(w @ xu[ntm].expm1()).toarray())
            sig[cells] = xu[cells].toarray() - ref
    col = {gi: j for j, gi in enumerate(used)}
    # 3. per target: projection on the target-vs-NT direction, 2-component mixture, iterate
    cls = np.where(nt, "NT", cond).astype(object)
    pko = np.zeros(n, dtype=np.float64)
    gmm = _gmm_class()
    rows, scores = [], {}
    for tgt in targets:
        orig = np.flatnonzero(cond == tgt)
        genes = de.get(tgt, np.zeros(0, int))
        row = dict(target=tgt, n_cells=orig.size, n_de_genes=int(genes.size), n_ko=0, n_np=orig.size,
                   ko_fraction=0.0, status="ok")
        if genes.size == 0:
            cls[orig] = f"{tgt} NP"
            row["status"] = f"fewer than {min_de_genes} DE genes vs {control}: all NP"
            rows.append(row)
            continue
        allc = np.flatnonzero(nt | (cond == tgt))
        dat = sig[allc][:, [col[gi] for gi in genes]].astype(np.float64)
        is_g = cond[allc] == tgt
        is_nt = ~is_g
        cur = is_g.copy()  # cells currently called KO (start: all guide cells)
        post = np.zeros(orig.size)
        converged, it = False, 0
        while not converged and it < iter_num:
            vec = dat[cur].mean(axis=0) - dat[is_nt].mean(axis=0)
            vv = float(vec @ vec)
            if vv == 0 or cur.sum() < 2:
                break
            pvec = dat @ vec / vv
            if it == 0:
                scores[tgt] = pvec
            mu_nt, var_nt = pvec[is_nt].mean(), max(pvec[is_nt].var(ddof=1), 1e-12)
            mu_g, var_g = pvec[cur].mean(), max(pvec[cur].var(ddof=1), 1e-12)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mm = gmm(n_components=2, covariance_type="spherical", means_init=[[mu_nt], [mu_g]],
                         precisions_init=[1 / var_nt, 1 / var_g], weights_init=[0.5, 0.5],
                         init_params="random", max_iter=5000, random_state=seed,
                         fixed_mean=mu_nt, fixed_var=var_nt).fit(pvec.reshape(-1, 1))
            m1, m2 = float(mm.means_[0, 0]), float(mm.means_[1, 0])
            v1, v2 = float(mm.covariances_[0]), float(mm.covariances_[1])
            pg = pvec[is_g]
            # Seurat: posterior from the likelihood ratio of the two components (no mixing weights)
            lr = _norm_logpdf(pg, m1, v1) - _norm_logpdf(pg, m2, v2)
            post = 1.0 / (1.0 + np.exp(np.clip(lr, -700, 700)))
            new = np.zeros_like(cur)
            new[np.flatnonzero(is_g)[post > 0.5]] = True
            if new.sum() < min_de_genes:  # Seurat reuses min.de.genes as the minimum number of KO cells
                new[:] = False
                converged = True
            if np.array_equal(new, cur):
                converged = True
            cur = new
            it += 1
        ko = cur[is_g]
        cls[orig] = np.where(ko, f"{tgt} KO", f"{tgt} NP")
        pko[orig] = post
        row.update(n_ko=int(ko.sum()), n_np=int((~ko).sum()), ko_fraction=float(ko.mean()) if ko.size else 0.0,
                   iterations=it)
        rows.append(row)
    glob = np.array([c.split(" ")[-1] if c != "NT" else "NT" for c in cls], dtype=object)
    unscored = ~nt & ~np.isin(cond, list(targets))  # targets left out by `perturbed`, or no label
    glob[unscored] = None
    pko[unscored] = np.nan
    table = pd.DataFrame(rows, columns=["target", "n_cells", "n_de_genes", "n_ko", "n_np", "ko_fraction",
                                        "iterations", "status"])
    table["iterations"] = table["iterations"].fillna(0).astype(int)
    table = table.sort_values("ko_fraction", ascending=False, kind="stable").reset_index(drop=True)
    extra = {"de_genes": {t: [str(var_names[i]) for i in de[t]] for t in targets if de.get(t) is not None
                          and len(de[t])}}
    return cls.astype(str), glob, pko, table, extra


def _mixscape_markers(x, var_names, cond, control, targets, *, logfc_threshold, pval_cutoff, min_pct,
                      min_de_genes) -> dict[str, np.ndarray]:
    import anndata as ad
    import scanpy as sc

    keep = np.isin(cond, list(targets) + [control])
    a = ad.AnnData(X=x[keep], obs=pd.DataFrame({"g": pd.Categorical(cond[keep])},
                                               index=pd.Index(np.arange(int(keep.sum())).astype(str))))
    a.var_names = var_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(a, "g", groups=list(targets), reference=control, method="wilcoxon",
                                corr_method="bonferroni", use_raw=False, tie_correct=False)
    rg = a.uns["rank_genes_groups"]
    idx = {gn: i for i, gn in enumerate(var_names)}
    xk = a.X
    ntm = (a.obs["g"] == control).to_numpy()
    e_nt = np.asarray(xk[ntm].expm1().mean(axis=0)).ravel()
    pct_nt = np.asarray((xk[ntm] > 0).mean(axis=0)).ravel()
    out = {}
    for t in targets:
        m = (a.obs["g"] == t).to_numpy()
        if m.sum() == 0:
            out[t] = np.zeros(0, int)
            continue
        e_t = np.asarray(xk[m].expm1().mean(axis=0)).ravel()
        pct_t = np.asarray((xk[m] > 0).mean(axis=0)).ravel()
        lfc = np.log2(e_t + 1) - np.log2(e_nt + 1)  # Seurat 4 avg_log2FC
        names = np.asarray(rg["names"][t]).astype(str)
        padj = np.asarray(rg["pvals_adj"][t], dtype=float)
        gi = np.array([idx[nm] for nm in names])
        ok = ((padj < pval_cutoff) & (np.abs(lfc[gi]) >= logfc_threshold)
              & (np.maximum(pct_t[gi], pct_nt[gi]) >= min_pct))
        sel = np.sort(gi[ok])
        out[t] = sel if sel.size >= min_de_genes else np.zeros(0, int)
    return out


# --------------------------------------------------------------------------------------------
# In-silico deletion
# --------------------------------------------------------------------------------------------
def _cos_rows(a, b):
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


def _insilico(adata, layer, encoder, cond, types, cell_type_key, pert, goal, genes, *, groups, n_random, max_cells,
              min_cells, seed):
    counts = get_matrix(adata, layer)
    check_counts(counts, name="X" if layer is None else f"layer {layer!r}",
                 hint="in-silico deletion re-encodes raw counts: pass layer= naming the counts layer "
                      "(Seurat: the 'counts' slot)")
    data_genes = np.asarray(adata.var_names).astype(str)
    missing = [g for g in genes if g not in set(data_genes)]
    if missing:
        raise ValueError(f"genes to delete not in the data: {', '.join(missing)} "
                         f"({len(genes) - len(missing)} of {len(genes)} present).")
    mg = list(encoder.genes)
    not_model = [g for g in genes if g not in set(mg)]
    if not_model:
        raise ValueError(f"genes to delete not among the model's {len(mg)} genes: {', '.join(not_model)}. "
                         "Deleting them cannot change the embedding; retrain the model with them or drop them.")
    shared = shared_genes(data_genes, mg, min_shared=max(1, int(math.ceil(0.5 * len(mg)))),
                          what="data and model")
    if len(shared) < len(mg):
        logger.warning("%d of the model's %d genes are not in the data; they are set to zero",
                       len(mg) - len(shared), len(mg))
    col_of = {g: i for i, g in enumerate(data_genes)}
    mcol = {g: j for j, g in enumerate(mg)}

    all_types = sorted(set(types.tolist()) - {"nan"})
    if groups is None:
        use_groups = all_types
    else:
        use_groups = [groups] if isinstance(groups, str) else [str(g) for g in groups]
        bad = [g for g in use_groups if g not in all_types]
        if bad:
            raise ValueError(f"groups not in obs[{cell_type_key!r}]: {', '.join(bad)}. "
                             f"Values that exist: {', '.join(all_types)}.")
    rng = np.random.default_rng(seed)
    sel_p, sel_g, plan = [], [], []
    for grp in use_groups:
        ip = np.flatnonzero((types == grp) & (cond == pert))
        ig = np.flatnonzero((types == grp) & (cond == goal))
        if max_cells is not None and ip.size > max_cells:
            ip = np.sort(rng.choice(ip, int(max_cells), replace=False))
        plan.append((grp, ip, ig))
        sel_p.append(ip)
        sel_g.append(ig)
    cells = np.unique(np.concatenate(sel_p + sel_g + [np.zeros(0, int)]))
    # model input: counts of the selected cells in the model's gene order (missing genes = 0)
    xc = sp.csr_matrix(counts[cells]) if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts[cells]))
    src = np.array([col_of[g] for g in shared])
    dst = np.array([mcol[g] for g in shared])
    xm = np.zeros((cells.size, len(mg)), dtype=np.float32)
    xm[:, dst] = xc[:, src].toarray()
    import anndata as ad

    bound = ad.AnnData(X=sp.csr_matrix(xm), obs=adata.obs.iloc[cells].copy(),
                       var=pd.DataFrame(index=pd.Index(mg)))
    encoder.bind(bound)
    pos = {c: i for i, c in enumerate(cells)}
    # log-normalised expression for matching random genes
    tot = xm.sum(axis=1, keepdims=True)
    tot[tot == 0] = 1
    lxm = np.log1p(xm / tot * 1e4)

    rows, wide = [], {}
    tested = [mcol[g] for g in genes]
    for grp, ip, ig in plan:
        base = dict(group=grp, n_cells=0, mean_expression=np.nan, cosine_shift=np.nan, cosine_shift_null_mean=np.nan,
                    goal_shift=np.nan, goal_shift_null_mean=np.nan, goal_shift_z=np.nan,
                    goal_distance_change=np.nan, goal_distance_change_null_mean=np.nan, goal_shift_rank=np.nan,
                    n_null=0, cosine_shift_pval=np.nan, goal_shift_pval=np.nan, status="ok")
        if ip.size < min_cells or ig.size < min_cells:
            st = (f"skipped: fewer than {min_cells} cells ({ip.size} {pert}, {ig.size} {goal})")
            rows += [dict(base, gene=g, status=st) for g in genes]
            continue
        rp = np.array([pos[c] for c in ip])
        rg = np.array([pos[c] for c in ig])
        xp = xm[rp]
        z0 = encoder.embed(xp, rp)
        zg = encoder.embed(xm[rg], rg).mean(axis=0)
        mexpr = lxm[rp].mean(axis=0)
        frac = (xp > 0).mean(axis=0)
        # matched random genes: among expressed genes not tested, the 3*n_random closest in mean
        # log-normalised expression, of which n_random drawn at random
        cand = np.setdiff1d(np.flatnonzero(frac >= max(3 / rp.size, 0.01)), tested)
        null_of = {}
        for j in tested:
            if cand.size == 0:
                null_of[j] = np.zeros(0, int)
                continue
            order = cand[np.argsort(np.abs(mexpr[cand] - mexpr[j]), kind="stable")][: 3 * n_random]
            null_of[j] = np.sort(rng.choice(order, min(n_random, order.size), replace=False))
        todo = sorted(set(tested) | set(np.concatenate(list(null_of.values()) + [np.zeros(0, int)]).tolist()))
        eff = _deletion_effects(encoder, xp, rp, z0, zg, todo)
        for g, j in zip(genes, tested, strict=True):
            e = eff[j]
            nj = [eff[k] for k in null_of[j] if eff[k]["n"] > 0]
            r = dict(base, gene=g, n_cells=e["n"], mean_expression=float(mexpr[j]))
            if e["n"] == 0:
                r["status"] = f"not expressed in the {pert} {grp} cells"
                rows.append(r)
                continue
            ncos = np.array([d["cos"] for d in nj])
            ngoal = np.array([d["goal"] for d in nj])
            ndist = np.array([d["dist"] for d in nj])
            r.update(cosine_shift=e["cos"], goal_shift=e["goal"], goal_distance_change=e["dist"], n_null=len(nj))
            if len(nj):
                sd = ngoal.std(ddof=1) if len(nj) > 1 else np.nan
                r.update(cosine_shift_null_mean=float(ncos.mean()), goal_shift_null_mean=float(ngoal.mean()),
                         goal_distance_change_null_mean=float(ndist.mean()),
                         goal_shift_z=float((e["goal"] - ngoal.mean()) / sd) if sd and sd > 0 else np.nan,
                         goal_shift_rank=int(1 + (ngoal > e["goal"]).sum()),
                         cosine_shift_pval=float((1 + (ncos >= e["cos"]).sum()) / (1 + len(nj))),
                         goal_shift_pval=float((1 + (ngoal >= e["goal"]).sum()) / (1 + len(nj))))
            else:
                r["status"] = "no matched random genes expressed in these cells"
            rows.append(r)
            wide.setdefault(grp, {})[g] = e["goal"]
    cols = ["gene", "group", "n_cells", "mean_expression", "cosine_shift", "cosine_shift_null_mean",
            "cosine_shift_pval", "goal_shift", "goal_shift_null_mean", "goal_shift_z", "goal_shift_rank",
            "goal_shift_pval", "goal_distance_change", "goal_distance_change_null_mean", "n_null", "status"]
    table = pd.DataFrame(rows)[cols]
    goal_mat = pd.DataFrame(wide).reindex(index=genes).astype(float) if wide else pd.DataFrame(index=genes)
    goal_mat.index.name = "gene"
    return table, {"goal_shift": goal_mat}


def _deletion_effects(encoder, xp, rp, z0, zg, todo, chunk_rows: int = 16384):
    """Per gene column j in ``todo``: re-encode the cells expressing j with j set to zero."""
    cos0 = _cos_rows(z0, zg[None, :])
    d0 = np.linalg.norm(z0 - zg, axis=1)
    out = {}
    buf_x, buf_r, buf_meta = [], [], []
    nbuf = 0

    def flush():
        nonlocal buf_x, buf_r, buf_meta, nbuf
        if not buf_x:
            return
        z = encoder.embed(np.concatenate(buf_x), np.concatenate(buf_r))
        s = 0
        for j, w in buf_meta:
            zj = z[s:s + w.size]
            s += w.size
            cos_shift = 1 - _cos_rows(z0[w], zj)
            goal = _cos_rows(zj, zg[None, :]) - cos0[w]
            dist = d0[w] - np.linalg.norm(zj - zg, axis=1)
            out[j] = dict(n=int(w.size), cos=float(cos_shift.mean()), goal=float(goal.mean()),
                          dist=float(dist.mean()))
        buf_x, buf_r, buf_meta, nbuf = [], [], [], 0

    for j in todo:
        w = np.flatnonzero(xp[:, j] > 0)
        if w.size == 0:
            out[j] = dict(n=0, cos=np.nan, goal=np.nan, dist=np.nan)
            continue
        xj = xp[w].copy()
        xj[:, j] = 0
        buf_x.append(xj)
        buf_r.append(rp[w])
        buf_meta.append((j, w))
        nbuf += w.size
        if nbuf >= chunk_rows:
            flush()
    flush()
    return out
