"""Variable-gene selection: ``highly_variable_genes`` (AnnData) and ``variable_genes`` (bare matrix).

Flavours
--------
- ``"seurat_v3"`` (default) and ``"seurat_v3_paper"``, on counts: the variance-stabilising
  transformation of Stuart et al. 2019 (Cell 177:1888), Seurat's
  ``FindVariableFeatures(selection.method = "vst")``; batches combined as scanpy's
  ``flavor="seurat_v3"`` (Seurat's ``SelectIntegrationFeatures``). Written here against the
  array module (CPU and GPU); the loess is :func:`loess_fitted`: ``skmisc.loess``
  (scikit-misc), the same netlib ``dloess`` code as R's ``stats::loess``.
- ``"seurat"`` and ``"cell_ranger"``, on log-normalised data: dispersion-based (Satija et al.
  2015; Zheng et al. 2017), run by :func:`scanpy.pp.highly_variable_genes` itself (CPU).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .._core import check_counts, check_obs_key, clamp_n_top, get_matrix, progress
from ._array import Device, col_sums, host, mean_var, modules, to_device
from ._docs import (doc_batch_key, doc_device, doc_device_raises, doc_layer, doc_matrix, doc_n_top_genes,
                    doc_params)

OWN_FLAVORS = ("seurat_v3", "seurat_v3_paper")  # on counts, written here (CPU and GPU)
SCANPY_FLAVORS = ("seurat", "cell_ranger")  # on log data, run by scanpy
FLAVORS = OWN_FLAVORS + SCANPY_FLAVORS


def loess_fitted(x: np.ndarray, y: np.ndarray, *, span: float = 0.75, degree: int = 2,
                 family: str = "gaussian", widen: bool = True, name: str = "loess",
                 what: str = "") -> np.ndarray:
    """Fitted values of ``loess(y ~ x, span = span, degree = degree)``, as R's ``stats::loess``.

    ``skmisc.loess`` (scikit-misc) wraps the netlib ``dloess`` code that R's ``stats::loess``
    uses (Cleveland, Grosse & Shyu 1992), with R's defaults (``surface = "interpolate"``,
    ``family = "gaussian"``), so the fits agree with R's to rounding. Used by the vst
    (``span = 0.3``) and available to other methods that fit a loess trend (e.g. Augur's
    mean / sd trend).

    Parameters
    ----------
    x, y
        1-d float arrays of the same length (NaN-free).
    span
        Fraction of the points in each local fit (R's ``span``, default 0.75).
    degree
        Degree of the local polynomials (0, 1 or 2; R's default 2).
    family
        ``"gaussian"`` (least squares, R's default) or ``"symmetric"`` (robust, re-weighted).
    widen
        Where R's loess only warns about near singularities (e.g. many points with the same
        ``x``), skmisc raises: widen the span in steps of 0.1 (up to 1) and warn which span was
        used. ``False``: raise skmisc's error.
    name, what
        Prefix of the messages (the method, e.g. ``"vst"``) and text inserted in them (e.g.
        ``" in batch 'A' (300 cells)"``).

    Returns
    -------
    float64 array of the fitted values, in the order of ``x``.

    Raises
    ------
    ValueError
        The fit fails even with ``span=1`` (or at once with ``widen=False``).
    ImportError
        scikit-misc is not installed.
    """
    try:
        from skmisc.loess import loess
    except ImportError as e:  # pragma: no cover - scikit-misc is a dependency
        raise ImportError("the loess fit needs scikit-misc: pip install scikit-misc") from e
    tried = span
    while True:
        try:
            model = loess(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), span=tried,
                          degree=degree, family=family)
            model.fit()
            break
        except ValueError as err:
            if not widen or tried >= 1.0:
                raise ValueError(f"{name}: the loess fit failed{what} even with span={tried} ({err}); "
                                 "the data are too few or too sparse (e.g. merge small batches).") from err
            tried = min(1.0, round(tried + 0.1, 10))
    if tried != span:
        msg = (f"{name}: the loess fit with span={span} is singular{what} (many points share the same x); "
               f"used span={tried} there (R's loess would warn and go on).")
        warnings.warn(msg, UserWarning, stacklevel=3)
    return np.asarray(model.outputs.fitted_values, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
def _x_vst(x, xp, sps, batches: pd.Categorical | None, span: float, verbose: bool | None = None):
    """Seurat v3 vst per batch. Returns host arrays: mean, var (all cells), norm_var (batches x genes),
    expected var (batches x genes, 10**loess fit)."""
    mean_all, var_all = mean_var(x, xp)
    if batches is None:
        todo, codes = [None], None
    else:
        codes = np.asarray(batches.codes, dtype=np.int64)
        todo = list(np.unique(codes))
    if len(todo) > 1:
        todo = progress(todo, desc="highly_variable_genes: batches", verbose=verbose)
    norm, expected = [], []
    for b in todo:
        xb = x if b is None else x[xp.asarray(np.flatnonzero(codes == b))]
        n = xb.shape[0]
        mean, var = (mean_all, var_all) if b is None else mean_var(xb, xp)
        mean_h, var_h = host(mean), host(var)
        not_const = var_h > 0
        est = np.zeros(x.shape[1], dtype=np.float64)
        where = "" if b is None else f" in batch {batches.categories[b]!r} ({n} cells)"
        est[not_const] = loess_fitted(np.log10(mean_h[not_const]), np.log10(var_h[not_const]), span=span,
                                      name="vst", what=where)
        reg_std = xp.asarray(np.sqrt(10**est))
        clip = reg_std * np.sqrt(n) + mean
        s1, s2 = col_sums(xb, xp, clip=clip)
        nv = (1 / ((n - 1) * reg_std**2)) * (n * mean**2 + s2 - 2 * s1 * mean)
        norm.append(host(nv))
        expected.append(10**est)
    return host(mean_all), host(var_all), np.vstack(norm), np.vstack(expected)


def _rank_hvg(norm_gene_vars: np.ndarray, n_top_genes: int, flavor: str, var_names) -> pd.DataFrame:
    """Ranking and selection exactly as scanpy's seurat_v3 (Seurat's SelectIntegrationFeatures)."""
    df = pd.DataFrame(index=pd.Index(var_names))
    # stable sort: ties (e.g. genes seen once) are broken by gene order, as R's order() in Seurat
    # (scanpy's default quicksort breaks them arbitrarily)
    ranked = np.argsort(np.argsort(-norm_gene_vars, axis=1, kind="stable"), axis=1, kind="stable")
    ranked = ranked.astype(np.float32)
    nbatches = np.sum((ranked < n_top_genes).astype(int), axis=0)
    ranked[ranked >= n_top_genes] = np.nan
    median_ranked = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    df["highly_variable_nbatches"] = nbatches
    df["highly_variable_rank"] = median_ranked
    df["variances_norm"] = np.mean(norm_gene_vars, axis=0)
    if flavor == "seurat_v3":
        cols, asc = ["highly_variable_rank", "highly_variable_nbatches"], [True, False]
    else:  # seurat_v3_paper
        cols, asc = ["highly_variable_nbatches", "highly_variable_rank"], [False, True]
    order = df[cols].sort_values(cols, ascending=asc, na_position="last", kind="stable").index
    df["highly_variable"] = False
    df.loc[order[: int(n_top_genes)], "highly_variable"] = True
    return df


def _hvg_table(x, xp, sps, batches, n_top_genes: int, flavor: str, span: float, var_names,
               verbose: bool | None = None) -> pd.DataFrame:
    """The per-gene table of the seurat_v3 flavours, from counts ``x`` on the device."""
    mean, var, norm, expected = _x_vst(x, xp, sps, batches, span, verbose)
    df = _rank_hvg(norm, n_top_genes, flavor, var_names)
    df.insert(0, "means", mean)
    df.insert(1, "variances", var)
    if expected.shape[0] == 1:
        df["variances_expected"] = expected[0]
    if batches is None:
        df = df.drop(columns="highly_variable_nbatches")
    return df


# ----------------------------------------------------------------------------------------------
# argument checks and writing (shared with run_chain)
# ----------------------------------------------------------------------------------------------
def _check_flavor(flavor: str) -> str:
    if flavor not in FLAVORS:
        raise ValueError(f"flavor={flavor!r} is not supported: use 'seurat_v3' (Seurat's vst, on counts), "
                         "'seurat_v3_paper', or on log-normalised data 'seurat' or 'cell_ranger'.")
    return flavor


def _categories(values, what: str) -> pd.Categorical:
    s = pd.Series(np.asarray(values, dtype=object))
    if s.isna().any():
        raise ValueError(f"{what} has {int(s.isna().sum())} missing values; "
                         "fill them (e.g. with 'unknown') before using it as batches.")
    return pd.Categorical(s.astype(str))


def _batch_categories(adata, batch_key: str | None) -> pd.Categorical | None:
    """``obs[batch_key]`` as categories of strings (``None`` without batches); clear errors."""
    if batch_key is None:
        return None
    check_obs_key(adata, batch_key, what="batch_key")
    return _categories(adata.obs[batch_key], f"obs[{batch_key!r}]")


def _write_hvg(adata, df: pd.DataFrame, flavor: str) -> None:
    adata.uns["hvg"] = {"flavor": flavor}
    for c in ("highly_variable", "highly_variable_rank", "means", "variances", "variances_norm",
              "variances_expected", "highly_variable_nbatches"):
        if c in df.columns:
            adata.var[c] = df[c].to_numpy()


def _scanpy_hvg(adata, **kw):
    import scanpy as sc

    return sc.pp.highly_variable_genes(adata, **kw)


# ----------------------------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------------------------
@doc_params(doc_n_top_genes=doc_n_top_genes, doc_batch_key=doc_batch_key, doc_device=doc_device,
            doc_device_raises=doc_device_raises)
def highly_variable_genes(adata, *, n_top_genes: int = 2000, flavor: str = "seurat_v3",
                          layer: str | None = None, batch_key: str | None = None, span: float = 0.3,
                          subset: bool = False, inplace: bool = True, check_values: bool = True,
                          device: Device = "auto"):
    """Highly variable genes; by default the variance-stabilising transformation (vst) of Seurat v3.

    ``flavor="seurat_v3"`` reproduces Seurat's ``FindVariableFeatures(selection.method = "vst")``
    and :func:`scanpy.pp.highly_variable_genes` with ``flavor="seurat_v3"``: on raw counts, a
    loess (span ``span``, degree 2) of log10(variance) on log10(mean) gives each gene's expected
    variance; counts are standardised with it, clipped at sqrt(n_cells), and genes are ranked
    by the variance of the standardised values. With ``batch_key`` this is done per batch and
    genes are ranked by their median rank among the batches where they are in the top
    ``n_top_genes`` (ties broken by the number of such batches), as Seurat's
    ``SelectIntegrationFeatures`` and scanpy do. ``"seurat"`` and ``"cell_ranger"`` (on
    log-normalised data) are run by :func:`scanpy.pp.highly_variable_genes` itself.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` (or ``layers[layer]``); log-normalised values for
        ``"seurat"`` / ``"cell_ranger"``.
    {doc_n_top_genes}
    flavor
        ``"seurat_v3"`` (default), ``"seurat_v3_paper"`` (rank first by number of batches),
        ``"seurat"`` or ``"cell_ranger"`` (scanpy, CPU).
    layer
        Layer holding the values instead of ``X``.
    {doc_batch_key}
    span
        Loess span of the vst (Seurat: ``loess.span = 0.3``).
    subset
        Keep only the selected genes in ``adata``.
    inplace
        ``False``: return the per-gene table instead of writing ``var``.
    check_values
        seurat_v3 flavours: check that the matrix holds counts (non-negative integers); raise
        otherwise.
    {doc_device}
        The statistics run on the device, the loess (one value per gene) on the host.

    Returns
    -------
    ``None``, writing ``var`` columns ``highly_variable`` (bool), ``highly_variable_rank`` (float,
    NaN outside the top genes), ``means``, ``variances`` (float64, all cells), ``variances_norm``
    (standardised variance, mean over batches), ``variances_expected`` (10^loess fit, single
    batch only) and ``highly_variable_nbatches`` (int, with ``batch_key``), plus
    ``uns["hvg"] = {{"flavor": flavor}}``; or the table (``inplace=False``). ``"seurat"`` /
    ``"cell_ranger"``: scanpy's columns (``means``, ``dispersions``, ``dispersions_norm``).

    Raises
    ------
    ValueError
        Non-count input for the seurat_v3 flavours (the message says which matrix and where
        counts usually are), an unknown ``flavor``, ``n_top_genes`` below 1, missing batches.
    KeyError
        ``batch_key`` not in ``obs`` (the message lists the columns).
    {doc_device_raises}
    """
    _check_flavor(flavor)
    n_top_genes = clamp_n_top("n_top_genes", n_top_genes, adata.n_vars)
    xp, sps, _ = modules(device)
    batches = _batch_categories(adata, batch_key)
    if flavor in SCANPY_FLAVORS:
        return _scanpy_hvg(adata, layer=layer, n_top_genes=n_top_genes, flavor=flavor, batch_key=batch_key,
                           subset=subset, inplace=inplace)
    counts = get_matrix(adata, layer)
    if check_values:
        check_counts(counts, name="X" if layer is None else f"layers[{layer!r}]",
                     hint="flavor='seurat_v3' needs raw counts: pass layer='counts' (Seurat: the counts slot)")
    x = to_device(counts, xp, sps)
    df = _hvg_table(x, xp, sps, batches, n_top_genes, flavor, span, adata.var_names)
    if not inplace:
        return df
    _write_hvg(adata, df, flavor)
    if subset:
        adata._inplace_subset_var(df["highly_variable"].to_numpy())
    return None


@doc_params(doc_matrix=doc_matrix, doc_n_top_genes=doc_n_top_genes, doc_device=doc_device,
            doc_device_raises=doc_device_raises)
def variable_genes(x, n_top_genes: int = 2000, *, flavor: str = "seurat_v3", batch=None, span: float = 0.3,
                   var_names=None, check_values: bool = True, device: Device = "cpu") -> pd.DataFrame:
    """Variable genes of a bare matrix: the matrix-level entry point of :func:`highly_variable_genes`.

    The same kernels and flavours as :func:`highly_variable_genes`, for jobs that select genes
    without an AnnData (scVI's and scANVI's training genes, TOSICA's, Mixscape's PCA genes).

    Parameters
    ----------
    {doc_matrix}
        Counts for the seurat_v3 flavours, log-normalised values for ``"seurat"`` /
        ``"cell_ranger"``.
    {doc_n_top_genes}
    flavor
        ``"seurat_v3"``, ``"seurat_v3_paper"``, ``"seurat"`` or ``"cell_ranger"`` (see
        :func:`highly_variable_genes`).
    batch
        Batch label of every cell (length n_cells; any values, no missing ones), or ``None``.
    span
        Loess span of the vst.
    var_names
        Gene names for the table's index (default: positions 0..n_genes-1).
    check_values
        seurat_v3 flavours: raise when ``x`` does not hold counts.
    {doc_device}

    Returns
    -------
    pandas DataFrame, one row per gene in input order, with the columns
    :func:`highly_variable_genes` writes (``highly_variable`` (bool) among them);
    ``np.flatnonzero(df["highly_variable"])`` gives the selected column indices.
    ``"seurat"`` / ``"cell_ranger"`` run scanpy with its warnings silenced.

    Raises
    ------
    ValueError
        Non-count ``x`` for the seurat_v3 flavours, an unknown ``flavor``, ``batch`` of the
        wrong length or with missing values, ``n_top_genes`` below 1.
    {doc_device_raises}
    """
    _check_flavor(flavor)
    n_top_genes = clamp_n_top("n_top_genes", n_top_genes, x.shape[1])
    names = pd.RangeIndex(x.shape[1]) if var_names is None else pd.Index(var_names)
    batches = None
    if batch is not None:
        if len(batch) != x.shape[0]:
            raise ValueError(f"batch has {len(batch)} values for {x.shape[0]} cells.")
        batches = _categories(batch, "batch")
    if flavor in SCANPY_FLAVORS:
        import anndata as ad

        obs = pd.DataFrame(index=pd.RangeIndex(x.shape[0]).astype(str))
        if batches is not None:
            obs["batch"] = batches
        a = ad.AnnData(X=host(x), obs=obs, var=pd.DataFrame(index=pd.RangeIndex(x.shape[1]).astype(str)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = _scanpy_hvg(a, n_top_genes=n_top_genes, flavor=flavor, inplace=False,
                             batch_key=None if batches is None else "batch")
        df.index = names
        return df
    if check_values:
        check_counts(host(x), name="x", hint=f"flavor={flavor!r} needs raw counts")
    xp, sps, _ = modules(device)
    return _hvg_table(to_device(x, xp, sps), xp, sps, batches, n_top_genes, flavor, span, names)
