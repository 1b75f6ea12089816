"""Preprocessing written once against an array module: numpy/scipy.sparse on CPU, cupy/cupyx on GPU.

The chain ``normalize_total -> log1p -> highly_variable_genes (seurat_v3) -> scale -> pca`` is the
one of Seurat (``NormalizeData -> FindVariableFeatures(vst) -> ScaleData -> RunPCA``) and scanpy.
Every numerical step is a private ``_x_*`` function that takes the array module ``xp`` and its
sparse module ``sps`` (chosen once, in :mod:`pybridge._device`), so the very same lines run on the
CPU (numpy/scipy) and on a CUDA GPU (cupy/cupyx); the public functions are thin scanpy-style
wrappers that move the data to the device, call them, and write the results into the AnnData.

:func:`run_chain` moves the counts to the device once, keeps them sparse through normalisation,
log1p and the variable-gene statistics, densifies only the variable genes for scaling and PCA,
and moves the results back once.

Sources
-------
- Normalisation: Seurat ``NormalizeData(normalization.method = "LogNormalize")`` (Hao et al. 2021,
  Cell 184:3573) = scanpy ``normalize_total(target_sum=1e4)`` + ``log1p`` (Wolf et al. 2018,
  Genome Biol 19:15).
- Variable genes: the variance-stabilising transformation of Stuart et al. 2019 (Cell 177:1888),
  Seurat ``FindVariableFeatures(selection.method = "vst")``; batch handling as scanpy's
  ``flavor="seurat_v3"`` (Seurat's ``SelectIntegrationFeatures``). The loess fit is
  ``skmisc.loess`` (scikit-misc), the same netlib ``dloess`` code as R's ``stats::loess``.
- Scaling: Seurat ``ScaleData`` / scanpy ``scale`` (unbiased standard deviation, clipping).
- PCA: randomized SVD of Halko, Martinsson & Tropp 2011 (SIAM Rev 53:217), as in scikit-learn's
  ``randomized_svd``; ARPACK (Lehoucq et al. 1998) through :func:`scipy.sparse.linalg.svds` on CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import ModuleType
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._device import get_array_module, get_sparse_module, resolve_device, to_host
from .._core import check_counts, check_obs_key, get_matrix, logger

Device = Literal["auto", "cpu", "cuda"]
CHAIN_STEPS = ("normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters")


# ----------------------------------------------------------------------------------------------
# device plumbing (the only place that knows about host <-> device)
# ----------------------------------------------------------------------------------------------
def _modules(device: str) -> tuple[ModuleType, ModuleType, str]:
    """``(xp, sps, resolved_device)`` for ``device``; raises the clear error of ``resolve_device``."""
    dev = resolve_device(device, backend="cupy")
    xp = get_array_module(dev)
    return xp, get_sparse_module(xp), dev


def _float_dtype(x, dtype=None):
    if dtype is not None:
        return np.dtype(dtype)
    kind = np.dtype(x.dtype)
    return kind if kind in (np.float32, np.float64) else np.dtype(np.float32)


def _to_device(x, xp: ModuleType, sps: ModuleType, dtype=None):
    """Host matrix -> device matrix (CSR for sparse), cast to a float dtype. Never writes into ``x``.

    On CPU this is a no-op when ``x`` is already CSR of the right dtype: the result then shares
    memory with ``x`` (possibly a read-only view of R memory), which the ``_x_*`` functions never
    modify.
    """
    dt = _float_dtype(x, dtype)
    if _is_sparse(x):
        if type(x).__module__.startswith("cupy"):
            m = x.tocsr() if x.format != "csr" else x
            return m.astype(dt) if m.dtype != dt else m
        m = x.tocsr() if x.format != "csr" else x
        if m.dtype != dt:
            m = m.astype(dt)
        if xp.__name__ == "numpy":
            return sp.csr_matrix(m) if not isinstance(m, sp.csr_matrix) else m
        return sps.csr_matrix(m)  # host -> device copy
    return xp.asarray(x, dtype=dt)


def _is_sparse(x) -> bool:
    if sp.issparse(x):
        return True
    mod = type(x).__module__
    return mod.startswith("cupyx.scipy.sparse")


def _host(x):
    """Device -> host (dense or sparse); host arrays pass through."""
    return to_host(x)


def _ravel(a, xp):
    return xp.asarray(a).ravel()


# ----------------------------------------------------------------------------------------------
# numerical kernels, written once against xp / sps
# ----------------------------------------------------------------------------------------------
def _x_row_sums(x, xp, sps):
    if _is_sparse(x):
        return _ravel(x.sum(axis=1), xp)
    return x.sum(axis=1)


def _x_row_ids(x, xp):
    """Row index of every stored value of a CSR matrix, O(nnz).

    numpy: ``repeat``; cupy (whose ``repeat`` takes no array of repeats): count the row starts,
    then a cumulative sum. The only place where the two array modules need different calls.
    """
    if xp.__name__ == "numpy":
        return np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
    nnz = int(x.indptr[-1])
    marks = xp.bincount(x.indptr[1:-1], minlength=nnz + 1)[:nnz]
    return xp.cumsum(marks, dtype=xp.int64)


def _x_normalize_total(x, xp, sps, target_sum: float | None):
    """Divide every cell (row) by its total and multiply by ``target_sum``. Returns (new x, totals)."""
    counts = _x_row_sums(x, xp, sps)
    if target_sum is None:
        pos = counts[counts > 0]
        target_sum = float(xp.median(pos)) if pos.size else 1.0
    factor = counts / x.dtype.type(target_sum)
    factor = xp.where(factor > 0, factor, xp.ones_like(factor)).astype(x.dtype)
    if _is_sparse(x):
        out = sps.csr_matrix((x.data / factor[_x_row_ids(x, xp)], x.indices, x.indptr), shape=x.shape)
    else:
        out = x / factor[:, None]
    return out, counts, target_sum


def _x_log1p(x, xp, sps, base: float | None = None):
    if _is_sparse(x):
        data = xp.log1p(x.data)
        if base is not None:
            data /= np.log(base)
        return sps.csr_matrix((data, x.indices, x.indptr), shape=x.shape)
    out = xp.log1p(x)
    if base is not None:
        out /= np.log(base)
    return out


def _x_col_sums(x, xp, *, clip=None, chunk: int = 16384):
    """Per-gene (column) sums and sums of squares of ``x`` (or of ``min(x, clip)``), in float64.

    Sparse: one float64 copy of the stored values, two weighted ``bincount`` over the column
    indices. Dense: blocks of ``chunk`` rows, so the float64 temporaries stay small.
    """
    if _is_sparse(x):
        data = x.data.astype(xp.float64)
        if clip is not None:
            xp.minimum(data, clip[x.indices], out=data)
        s1 = xp.bincount(x.indices, weights=data, minlength=x.shape[1])
        data *= data
        s2 = xp.bincount(x.indices, weights=data, minlength=x.shape[1])
        return s1, s2
    s1 = xp.zeros(x.shape[1], dtype=xp.float64)
    s2 = xp.zeros(x.shape[1], dtype=xp.float64)
    for i in range(0, x.shape[0], chunk):
        d = x[i:i + chunk].astype(xp.float64)
        if clip is not None:
            d = xp.minimum(d, clip[None, :])
        s1 += d.sum(axis=0)
        d *= d
        s2 += d.sum(axis=0)
    return s1, s2


def _x_mean_var(x, xp):
    """Per-gene mean and unbiased variance (ddof=1, R's convention), float64."""
    n = x.shape[0]
    s1, s2 = _x_col_sums(x, xp)
    mean = s1 / n
    var = s2 / n - mean**2
    if n > 1:
        var *= n / (n - 1)
    return mean, var


def _loess_fitted(x: np.ndarray, y: np.ndarray, span: float, what: str = "") -> np.ndarray:
    """Fitted values of loess(y ~ x, span, degree 2) (skmisc = netlib dloess, as R's stats::loess).

    Where R's loess only warns about near singularities (small batches in which many genes share
    the same mean, e.g. seen once), skmisc raises; the span is then widened in steps of 0.1
    (up to 1) and a warning says which span was used.
    """
    try:
        from skmisc.loess import loess
    except ImportError as e:  # pragma: no cover - scikit-misc is a dependency
        raise ImportError(
            "flavor='seurat_v3' needs the loess of scikit-misc: pip install scikit-misc"
        ) from e
    tried = span
    while True:
        try:
            model = loess(x, y, span=tried, degree=2)
            model.fit()
            break
        except ValueError as err:
            if tried >= 1.0:
                raise ValueError(f"the loess fit of the vst failed{what} even with span=1 ({err}); "
                                 "the batch is too small or too sparse: merge small batches.") from err
            tried = min(1.0, round(tried + 0.1, 10))
    if tried != span:
        import warnings

        msg = (f"vst: the loess fit with span={span} is singular{what} (many genes share the same mean); "
               f"used span={tried} there (R's loess would warn and go on).")
        warnings.warn(msg, UserWarning, stacklevel=3)
    return np.asarray(model.outputs.fitted_values)


def _x_vst(x, xp, sps, batches_cat: pd.Categorical | None, span: float):
    """Seurat v3 vst per batch. Returns host arrays: mean, var (all cells), norm_var (batches x genes),
    expected var (batches x genes, 10**loess fit)."""
    mean_all, var_all = _x_mean_var(x, xp)
    if batches_cat is None:
        batches, batch_codes = [None], None
    else:
        batch_codes = np.asarray(batches_cat.codes, dtype=np.int64)
        batches = list(np.unique(batch_codes))
    norm, expected = [], []
    for b in batches:
        if b is None:
            xb = x
        else:
            rows = xp.asarray(np.flatnonzero(batch_codes == b))
            xb = x[rows]
        n = xb.shape[0]
        mean, var = (mean_all, var_all) if b is None else _x_mean_var(xb, xp)
        mean_h, var_h = _host(mean), _host(var)
        not_const = var_h > 0
        est = np.zeros(x.shape[1], dtype=np.float64)
        est[not_const] = _loess_fitted(np.log10(mean_h[not_const]), np.log10(var_h[not_const]), span,
                                       "" if b is None else f" in batch {batches_cat.categories[b]!r} ({n} cells)")
        reg_std_h = np.sqrt(10**est)
        reg_std = xp.asarray(reg_std_h)
        clip = reg_std * np.sqrt(n) + mean
        s1, s2 = _x_col_sums(xb, xp, clip=clip)
        nv = (1 / ((n - 1) * reg_std**2)) * (n * mean**2 + s2 - 2 * s1 * mean)
        norm.append(_host(nv))
        expected.append(10**est)
    return _host(mean_all), _host(var_all), np.vstack(norm), np.vstack(expected)


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


def _x_scale(x, xp, sps, *, zero_center: bool, max_value: float | None):
    """Scale genes (columns) to unit variance (and zero mean); dense result, clipped. A new array."""
    if _is_sparse(x):
        mean, var = _x_mean_var(x, xp)
        if zero_center:
            out = x.toarray()
        else:
            out = x.copy()
    else:
        mean, var = _x_mean_var(x, xp)
        out = x.copy()
    std = xp.sqrt(var)
    std[std == 0] = 1
    if _is_sparse(out):  # no centering: scale the stored values only, stays sparse
        out.data /= std[out.indices].astype(out.dtype)
        if max_value is not None:
            out.data = xp.minimum(out.data, out.dtype.type(max_value))
        return out, mean, std
    if zero_center:
        out -= mean.astype(out.dtype)
    out /= std.astype(out.dtype)
    if max_value is not None:
        if zero_center:
            xp.clip(out, -max_value, max_value, out=out)
        else:
            xp.minimum(out, out.dtype.type(max_value), out=out)
    return out, mean, std


def _x_svd_flip(u, vt, xp):
    """Deterministic signs: the largest absolute loading of each component is positive (sklearn)."""
    idx = xp.argmax(xp.abs(vt), axis=1)
    signs = xp.sign(vt[xp.arange(vt.shape[0]), idx])
    signs[signs == 0] = 1
    return u * signs[None, :], vt * signs[:, None]


def _x_randomized_svd(a, k: int, xp, *, n_oversamples: int, n_iter: int, random_state: int):
    """Truncated SVD of dense ``a`` by randomized subspace iteration (Halko et al. 2011)."""
    n, m = a.shape
    rng = np.random.RandomState(random_state)
    ell = min(k + n_oversamples, min(n, m))
    omega = xp.asarray(rng.standard_normal((m, ell)).astype(a.dtype))
    q = a @ omega
    for _ in range(n_iter):
        q, _ = xp.linalg.qr(q)
        q, _ = xp.linalg.qr(a.T @ q)
        q = a @ q
    q, _ = xp.linalg.qr(q)
    b = q.T @ a
    uh, s, vt = xp.linalg.svd(b, full_matrices=False)
    u = q @ uh
    return u[:, :k], s[:k], vt[:k]


def _x_covariance_eigh(a, k: int, xp, sps, *, random_state: int = 0, chunk: int = 16384):
    """Top-``k`` PCA of dense centred ``a`` from the eigenvectors of its Gram matrix ``a.T @ a``.

    The Gram matrix (genes x genes) is accumulated in float64 over blocks of rows, each block
    multiplied in the data's dtype (one pass over the data, BLAS / cuBLAS); its leading
    eigenvectors come from Lanczos (``sps.linalg.eigsh``: ARPACK on CPU, cupyx's thick-restart
    Lanczos on GPU) to machine precision above 1,000 genes, from a full ``xp.linalg.eigh``
    below (faster there) or when ``k`` is close to the number of genes. Exact up to rounding:
    the choice for the few thousand variable genes of single-cell PCA (scanpy's
    ``svd_solver="covariance_eigh"``). Returns ``u, s, vt`` as an SVD would.
    """
    d = a.shape[1]
    gram = xp.zeros((d, d), dtype=xp.float64)
    for i in range(0, a.shape[0], chunk):
        c = a[i:i + chunk]
        gram += (c.T @ c).astype(xp.float64)
    if k < d - 1 and d > 1000:  # measured: Lanczos beats a full eigh from ~1,000 genes
        import importlib

        linalg = importlib.import_module(sps.__name__ + ".linalg")
        rng = np.random.RandomState(random_state)
        v0 = xp.asarray(rng.uniform(-1, 1, d))
        try:
            evals, evecs = linalg.eigsh(gram, k=k, which="LM", v0=v0)
        except TypeError:  # older cupyx eigsh without v0
            evals, evecs = linalg.eigsh(gram, k=k, which="LM")
    else:
        evals, evecs = xp.linalg.eigh(gram)
    order = xp.argsort(-evals)[:k]
    evals = xp.clip(evals[order], 0, None)
    v = evecs[:, order].astype(a.dtype)
    s = xp.sqrt(evals)
    us = a @ v  # = u * s
    safe = xp.where(s > 0, s, 1).astype(a.dtype)
    return us / safe[None, :], s.astype(a.dtype), v.T


def _arpack_svd(a, k: int, random_state: int):
    from scipy.sparse.linalg import svds

    rng = np.random.RandomState(random_state)
    v0 = rng.uniform(-1, 1, min(a.shape))  # as scikit-learn's PCA(svd_solver="arpack")
    u, s, vt = svds(a, k=k, v0=v0)
    order = np.argsort(-s)
    return u[:, order], s[order], vt[order]


def _x_pca(x, xp, sps, *, n_comps: int, zero_center: bool, svd_solver: str, random_state: int,
           n_oversamples: int, n_iter: int):
    """PCA of dense (or sparse, densified) ``x``: embeddings, loadings (genes x comps), variances."""
    a = x.toarray() if _is_sparse(x) else x.copy()
    n = a.shape[0]
    if zero_center:
        a -= (_x_col_sums(a, xp)[0] / n).astype(a.dtype)
    # total variance of the (centred) data: the denominator of variance_ratio (Seurat: total.variance)
    _, v = _x_mean_var(a, xp)
    total_var = float(v.sum())
    if svd_solver == "auto":
        svd_solver = "covariance_eigh" if a.shape[1] <= 5000 else "randomized"
    if svd_solver == "covariance_eigh":
        u, s, vt = _x_covariance_eigh(a, n_comps, xp, sps, random_state=random_state)
    elif svd_solver == "randomized":
        u, s, vt = _x_randomized_svd(a, n_comps, xp, n_oversamples=n_oversamples, n_iter=n_iter,
                                     random_state=random_state)
    elif svd_solver == "arpack":
        if xp.__name__ != "numpy":
            raise ValueError("svd_solver='arpack' runs on the CPU only; use svd_solver='randomized' "
                             "with device='cuda' (or device='cpu').")
        u, s, vt = (np.asarray(v) for v in _arpack_svd(a, n_comps, random_state))
    else:
        raise ValueError("svd_solver must be 'auto', 'covariance_eigh', 'randomized' or 'arpack', "
                         f"got {svd_solver!r}.")
    u, vt = _x_svd_flip(u, vt, xp)
    emb = u * s[None, :]
    variance = s.astype(xp.float64) ** 2 / max(n - 1, 1)
    return emb, vt.T, variance, total_var


# ----------------------------------------------------------------------------------------------
# helpers for the AnnData wrappers
# ----------------------------------------------------------------------------------------------
def _check_device_arg(device):
    resolve_device(device, backend="cupy")  # raises ValueError / RuntimeError with the fix


def _set_matrix(adata, layer: str | None, value) -> None:
    if layer is None:
        adata.X = value
    else:
        adata.layers[layer] = value


def _hvg_mask(adata, mask_var) -> np.ndarray | None:
    if mask_var is None:
        return None
    if isinstance(mask_var, str):
        if mask_var not in adata.var.columns:
            cols = ", ".join(map(str, adata.var.columns)) or "(none)"
            raise KeyError(f"mask_var {mask_var!r} is not a column of var. Columns that exist: {cols}. "
                           "Run pybridge.pp.highly_variable_genes first, or pass mask_var=None.")
        return np.asarray(adata.var[mask_var], dtype=bool)
    m = np.asarray(mask_var, dtype=bool)
    if m.shape != (adata.n_vars,):
        raise ValueError(f"mask_var has shape {m.shape}; a boolean vector of length n_vars={adata.n_vars} is needed.")
    return m


_EMPTY = object()


def _default_mask(adata, mask_var):
    if mask_var is _EMPTY:
        return "highly_variable" if "highly_variable" in adata.var.columns else None
    return mask_var


def _batch_codes(adata, batch_key: str | None) -> np.ndarray | None:
    if batch_key is None:
        return None
    check_obs_key(adata, batch_key, what="batch_key")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(f"obs[{batch_key!r}] has {int(col.isna().sum())} missing values; "
                         "fill them (e.g. with 'unknown') before using it as batch_key.")
    return pd.Categorical(col.astype(str))


# ----------------------------------------------------------------------------------------------
# public scanpy-style functions
# ----------------------------------------------------------------------------------------------
def normalize_total(adata, *, target_sum: float | None = None, key_added: str | None = None,
                    layer: str | None = None, inplace: bool = True, copy: bool = False,
                    device: Device = "auto"):
    """Normalise counts per cell: each cell is divided by its total count and multiplied by ``target_sum``.

    Same result as :func:`scanpy.pp.normalize_total` and (with ``target_sum=1e4`` and
    :func:`log1p`) Seurat's ``NormalizeData(normalization.method = "LogNormalize")``. Sparse input
    stays sparse. The input matrix is never written into (a read-only ``X`` from R is fine): the
    result is a new matrix assigned to ``X`` / ``layers[layer]``.

    Parameters
    ----------
    adata
        AnnData (cells x genes) with counts in ``X`` or ``layers[layer]``.
    target_sum
        Total per cell after normalisation (Seurat: ``scale.factor = 1e4``). ``None``: the median
        of the non-zero cell totals (scanpy's default).
    key_added
        If given, ``obs[key_added]`` receives the per-cell totals before normalisation (float).
    layer
        Layer to normalise instead of ``X``.
    inplace
        ``False``: return ``{"X": normalised matrix, "norm_factor": totals}`` (host arrays) and
        leave ``adata`` untouched.
    copy
        Return a normalised copy of ``adata`` instead of changing it.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (cupy): see :func:`pybridge._device.resolve_device`.

    Returns
    -------
    ``None`` (``adata`` changed), the dict (``inplace=False``) or the copy (``copy=True``).
    The matrix keeps a float input dtype (float32 for integer input).

    Raises
    ------
    KeyError
        ``layer`` does not exist (the message lists the layers).
    RuntimeError
        ``device="cuda"`` without a CUDA device visible to cupy.
    """
    xp, sps, _ = _modules(device)
    if copy:
        adata = adata.copy()
    x = _to_device(get_matrix(adata, layer), xp, sps)
    out, counts, _ = _x_normalize_total(x, xp, sps, target_sum)
    out, counts = _host(out), _host(counts)
    if not inplace:
        return {"X": out, "norm_factor": counts}
    _set_matrix(adata, layer, out)
    if key_added is not None:
        adata.obs[key_added] = np.asarray(counts, dtype=np.float64)
    return adata if copy else None


def log1p(adata, *, base: float | None = None, layer: str | None = None, copy: bool = False,
          device: Device = "auto"):
    """Natural logarithm of one plus the values (``log(1 + x)``), as :func:`scanpy.pp.log1p`.

    Parameters
    ----------
    adata
        AnnData with normalised values in ``X`` (or ``layers[layer]``).
    base
        Logarithm base (``None``: natural log, as Seurat's ``LogNormalize``).
    layer
        Layer to transform instead of ``X``.
    copy
        Return a transformed copy instead of changing ``adata``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    ``None`` or the copy. ``uns["log1p"] = {"base": base}`` is recorded as scanpy does.
    """
    xp, sps, _ = _modules(device)
    if copy:
        adata = adata.copy()
    x = _to_device(get_matrix(adata, layer), xp, sps)
    _set_matrix(adata, layer, _host(_x_log1p(x, xp, sps, base)))
    adata.uns["log1p"] = {"base": base}
    return adata if copy else None


def highly_variable_genes(adata, *, n_top_genes: int = 2000, flavor: str = "seurat_v3",
                          layer: str | None = None, batch_key: str | None = None, span: float = 0.3,
                          subset: bool = False, inplace: bool = True, check_values: bool = True,
                          device: Device = "auto"):
    """Highly variable genes by the variance-stabilising transformation (vst) of Seurat v3.

    Reproduces Seurat's ``FindVariableFeatures(selection.method = "vst")`` and
    :func:`scanpy.pp.highly_variable_genes` with ``flavor="seurat_v3"``: on raw counts, a loess
    (span ``span``, degree 2) of log10(variance) on log10(mean) gives each gene's expected
    variance; counts are standardised with it, clipped at sqrt(n_cells), and genes are ranked
    by the variance of the standardised values. With ``batch_key`` this is done per batch and
    genes are ranked by their median rank among the batches where they are in the top
    ``n_top_genes`` (ties broken by the number of such batches), as Seurat's
    ``SelectIntegrationFeatures`` and scanpy do.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` (or ``layers[layer]``).
    n_top_genes
        Number of genes to select (Seurat: ``nfeatures``).
    flavor
        ``"seurat_v3"`` (default) or ``"seurat_v3_paper"`` (rank first by number of batches).
        Other flavors (``"seurat"``, ``"cell_ranger"``) work on log data: use scanpy for those.
    layer
        Layer holding the counts instead of ``X``.
    batch_key
        Column of ``obs`` with batches (e.g. samples); ``None`` treats all cells as one batch.
    span
        Loess span (Seurat: ``loess.span = 0.3``).
    subset
        Keep only the selected genes in ``adata``.
    inplace
        ``False``: return the per-gene table instead of writing ``var``.
    check_values
        Check that the matrix holds counts (non-negative integers); raise otherwise.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``: the statistics run on the device, the loess (one value
        per gene) on the host.

    Returns
    -------
    ``None``, writing ``var`` columns ``highly_variable`` (bool), ``highly_variable_rank`` (float,
    NaN outside the top genes), ``means``, ``variances`` (float64, all cells), ``variances_norm``
    (standardised variance, mean over batches), ``variances_expected`` (10^loess fit, single
    batch only) and ``highly_variable_nbatches`` (int, with ``batch_key``), plus
    ``uns["hvg"] = {"flavor": flavor}``; or the table (``inplace=False``).

    Raises
    ------
    ValueError
        Non-count input (the message says which matrix and where counts usually are), an
        unknown ``flavor``, or ``n_top_genes`` larger than the number of genes.
    KeyError
        ``batch_key`` not in ``obs`` (the message lists the columns).
    """
    if flavor not in ("seurat_v3", "seurat_v3_paper"):
        raise ValueError(f"flavor={flavor!r} is not supported here: pybridge implements 'seurat_v3' "
                         "(Seurat's vst, on counts) and 'seurat_v3_paper'. For 'seurat' or "
                         "'cell_ranger' use scanpy.pp.highly_variable_genes.")
    n_top_genes = _check_n_top(n_top_genes, adata.n_vars)
    xp, sps, _ = _modules(device)
    counts = get_matrix(adata, layer)
    if check_values:
        check_counts(counts, name="X" if layer is None else f"layers[{layer!r}]",
                     hint="flavor='seurat_v3' needs raw counts: pass layer='counts' (Seurat: the counts slot)")
    codes = _batch_codes(adata, batch_key)
    x = _to_device(counts, xp, sps)
    df = _hvg_table(x, xp, sps, codes, n_top_genes, flavor, span, adata.var_names, batch_key)
    if not inplace:
        return df
    _write_hvg(adata, df, flavor, batch_key)
    if subset:
        adata._inplace_subset_var(df["highly_variable"].to_numpy())
    return None


def _check_n_top(n_top_genes, n_vars: int) -> int:
    n_top_genes = int(n_top_genes)
    if n_top_genes < 1 or n_top_genes > n_vars:
        raise ValueError(f"n_top_genes={n_top_genes} must be between 1 and the number of genes ({n_vars}); "
                         "Seurat: nfeatures.")
    return n_top_genes


def _hvg_table(x, xp, sps, codes, n_top_genes, flavor, span, var_names, batch_key):
    mean, var, norm, expected = _x_vst(x, xp, sps, codes, span)
    df = _rank_hvg(norm, n_top_genes, flavor, var_names)
    df.insert(0, "means", mean)
    df.insert(1, "variances", var)
    if expected.shape[0] == 1:
        df["variances_expected"] = expected[0]
    if batch_key is None:
        df = df.drop(columns="highly_variable_nbatches")
    return df


def _write_hvg(adata, df: pd.DataFrame, flavor: str, batch_key) -> None:
    adata.uns["hvg"] = {"flavor": flavor}
    for c in ("highly_variable", "highly_variable_rank", "means", "variances", "variances_norm",
              "variances_expected", "highly_variable_nbatches"):
        if c in df.columns:
            adata.var[c] = df[c].to_numpy()


def scale(adata, *, zero_center: bool = True, max_value: float | None = None, layer: str | None = None,
          copy: bool = False, device: Device = "auto"):
    """Scale every gene to unit variance and (by default) zero mean, as :func:`scanpy.pp.scale`.

    Seurat's ``ScaleData`` is the same with ``max_value=10`` (Seurat clips only from above;
    scanpy and pybridge clip to ``[-max_value, max_value]`` when centring; values below -10 are
    rare: a cell without a gene that every other cell expresses tightly). The standard deviation
    is the unbiased one (n - 1); genes with zero variance are left unscaled.

    Parameters
    ----------
    adata
        AnnData with (log-normalised) values in ``X`` or ``layers[layer]``.
    zero_center
        Subtract each gene's mean (the result is dense). ``False`` keeps sparse input sparse.
    max_value
        Clip the scaled values to this (Seurat: ``scale.max = 10``); ``None``: no clipping.
    layer
        Layer to scale instead of ``X``.
    copy
        Return a scaled copy instead of changing ``adata``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    ``None`` or the copy; ``X`` (or the layer) becomes the scaled matrix, and ``var["mean"]``,
    ``var["std"]`` (float64) hold the statistics used.
    """
    xp, sps, _ = _modules(device)
    if copy:
        adata = adata.copy()
    x = _to_device(get_matrix(adata, layer), xp, sps)
    out, mean, std = _x_scale(x, xp, sps, zero_center=zero_center, max_value=max_value)
    _set_matrix(adata, layer, _host(out))
    adata.var["mean"] = _host(mean)
    adata.var["std"] = _host(std)
    return adata if copy else None


def pca(adata, n_comps: int | None = None, *, layer: str | None = None, zero_center: bool = True,
        svd_solver: str = "auto", random_state: int = 0, mask_var=_EMPTY,
        key_added: str | None = None, n_oversamples: int = 20, n_iter: int = 7, copy: bool = False,
        device: Device = "auto"):
    """Principal component analysis of ``X`` (or a layer), on the genes of ``mask_var``.

    As :func:`scanpy.pp.pca` (same keys) and Seurat's ``RunPCA`` (whose ``stdev`` is kept too).
    Sparse input is densified on the selected genes (scale the data first for Seurat's PCA).

    Parameters
    ----------
    adata
        AnnData, usually scaled (:func:`scale`).
    n_comps
        Number of components (default 50, capped at min(n_cells, n_genes) - 1).
    layer
        Use this layer instead of ``X``.
    zero_center
        Centre the genes before the SVD (PCA); ``False``: truncated SVD.
    svd_solver
        ``"randomized"`` (Halko et al. 2011; written with the array module, so it runs on CPU
        and GPU) or ``"arpack"`` (:func:`scipy.sparse.linalg.svds`, CPU only, as scanpy's default).
    random_state
        Seed of the random start (both solvers).
    mask_var
        Boolean vector or ``var`` column of the genes to use; default ``"highly_variable"`` when that
        column exists, else all genes; ``None``: all genes.
    key_added
        Keys for the results (default: ``obsm["X_pca"]``, ``varm["PCs"]``, ``uns["pca"]``).
    n_oversamples, n_iter
        Randomized SVD: extra random directions and power iterations (more = closer to exact).
    copy
        Return a copy with the results instead of changing ``adata``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    ``None`` or the copy, with ``obsm[X_pca]`` (cells x n_comps, the data's float dtype),
    ``varm[PCs]`` (genes x n_comps loadings, 0 outside ``mask_var``), ``uns[pca]`` with
    ``variance`` (eigenvalues, ddof=1), ``variance_ratio``, ``stdev`` (= Seurat's ``stdev``,
    sqrt(variance)), ``total_variance`` and ``params``. Signs: the largest-magnitude loading of
    each component is positive.

    Raises
    ------
    ValueError
        ``svd_solver='arpack'`` on the GPU, an unknown solver, or too many components.
    """
    xp, sps, _ = _modules(device)
    if copy:
        adata = adata.copy()
    mask_param = _default_mask(adata, mask_var)
    mask = _hvg_mask(adata, mask_param)
    x = get_matrix(adata, layer)
    if mask is not None:
        x = x[:, np.flatnonzero(mask)]
    n_comps = _check_n_comps(n_comps, x.shape)
    xd = _to_device(x, xp, sps)
    emb, loadings, variance, total = _x_pca(xd, xp, sps, n_comps=n_comps, zero_center=zero_center,
                                            svd_solver=svd_solver, random_state=random_state,
                                            n_oversamples=n_oversamples, n_iter=n_iter)
    _write_pca(adata, _host(emb), _host(loadings), _host(variance), total, mask, key_added,
               dict(zero_center=zero_center, svd_solver=svd_solver, random_state=random_state,
                    mask_var=mask_param if isinstance(mask_param, str) or mask_param is None else "custom",
                    use_highly_variable=mask_param == "highly_variable", layer=layer))
    return adata if copy else None


def _check_n_comps(n_comps, shape) -> int:
    limit = min(shape) - 1
    if n_comps is None:
        n_comps = min(50, limit)
    n_comps = int(n_comps)
    if n_comps < 1 or n_comps > limit:
        raise ValueError(f"n_comps={n_comps} must be between 1 and min(n_cells, n_genes) - 1 = {limit} "
                         f"(the data used has {shape[0]} cells x {shape[1]} genes).")
    return n_comps


def _write_pca(adata, emb, loadings, variance, total, mask, key_added, params):
    key_obsm, key_varm, key_uns = ("X_pca", "PCs", "pca") if key_added is None else (key_added,) * 3
    adata.obsm[key_obsm] = np.ascontiguousarray(emb)
    if mask is not None:
        full = np.zeros((adata.n_vars, loadings.shape[1]), dtype=loadings.dtype)
        full[mask] = loadings
        adata.varm[key_varm] = full
    else:
        adata.varm[key_varm] = np.ascontiguousarray(loadings)
    variance = np.asarray(variance, dtype=np.float64)
    adata.uns[key_uns] = dict(params={k: v for k, v in params.items() if v is not None},
                              variance=variance, variance_ratio=variance / total,
                              stdev=np.sqrt(variance), total_variance=float(total))


# ----------------------------------------------------------------------------------------------
# the chain
# ----------------------------------------------------------------------------------------------
def run_chain(adata, *, steps: Sequence[str] = CHAIN_STEPS, layer: str | None = None,
              data_layer: str | None = None, target_sum: float = 1e4, n_top_genes: int = 2000,
              batch_key: str | None = None, span: float = 0.3, max_value: float | None = 10,
              n_comps: int = 50, svd_solver: str = "auto", n_oversamples: int = 20,
              n_iter: int = 7, n_pcs: int = 30, n_neighbors: int = 20, snn_prune: float = 1 / 15,
              min_dist: float = 0.3, resolution: float = 0.8, cluster_key: str = "leiden",
              cluster_on: Literal["snn", "connectivities"] = "snn", scaled_key: str | None = "X_scaled",
              dtype=None, random_state: int = 0, device: Device = "auto", copy: bool = False):
    """Seurat's standard chain in one call, on CPU or GPU: normalise, variable genes, scale, PCA, graph, UMAP, clusters.

    The equivalent of Seurat's ``NormalizeData -> FindVariableFeatures(vst) -> ScaleData ->
    RunPCA -> FindNeighbors -> RunUMAP -> FindClusters`` and of scanpy's
    ``normalize_total -> log1p -> highly_variable_genes(seurat_v3) -> scale -> pca -> neighbors
    -> umap -> leiden``. The counts move to the device once; normalisation, log1p and the
    variable-gene statistics run on the sparse matrix; only the variable genes are densified
    for scaling and PCA; the results move back once. The graph steps use rapids-singlecell on a
    GPU (when installed) and scanpy otherwise (:mod:`pybridge.tl`).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` (or ``layers[layer]``). Not written into: a read-only
        ``X`` (a view of R memory) is fine.
    steps
        Subset of ``("normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters")``, run
        in this order. A step that is left out is taken from ``adata``: log-normalised values
        from ``layers[data_layer]`` (or ``X``) without ``"normalize"``; ``var["highly_variable"]``
        without ``"hvg"``; ``obsm[scaled_key]`` without ``"scale"``; ``obsm["X_pca"]`` without ``"pca"``.
    layer
        Where the counts are (``None``: ``X``).
    data_layer
        Where log-normalised values are when ``"normalize"`` is not run (``None``: ``X``).
    target_sum
        Total per cell after normalisation (Seurat's ``scale.factor``).
    n_top_genes, batch_key, span
        Variable genes: see :func:`highly_variable_genes`.
    max_value
        Clip of the scaled values (Seurat's ``scale.max``); ``None``: no clipping.
    n_comps, svd_solver, n_oversamples, n_iter
        PCA: see :func:`pca`.
    n_pcs
        Number of leading PCs used for the graph and UMAP (Seurat: ``dims = 1:n_pcs``).
    n_neighbors
        Neighbours per cell, the cell included (Seurat: ``k.param = 20``).
    snn_prune
        Shared-nearest-neighbour graph: Jaccard weights below this are set to 0 (Seurat's
        ``prune.SNN``).
    min_dist
        UMAP ``min_dist`` (Seurat's ``RunUMAP`` default 0.3).
    resolution
        Leiden resolution (higher = more clusters).
    cluster_key
        ``obs`` column for the clusters (categorical, labels ``"0", "1", ...`` by decreasing size).
    cluster_on
        Graph to cluster: ``"snn"`` (as Seurat's ``FindClusters``) or ``"connectivities"`` (scanpy).
    scaled_key
        ``obsm`` key where the scaled variable genes (cells x variable genes, dense) are kept;
        ``None`` to not keep them.
    dtype
        Float dtype on the device (default: the input's float dtype; float32 for integers).
    random_state
        Seed for PCA, UMAP and Leiden.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    copy
        Work on and return a copy.

    Returns
    -------
    ``None`` (or the copy). Written: ``X`` = log-normalised values (sparse, all genes;
    ``layers["counts"]`` keeps the counts when they were in ``X``), the ``var`` columns of
    :func:`highly_variable_genes`, ``var["mean"]``/``var["std"]`` (scaling statistics, NaN
    outside the variable genes), ``obsm[scaled_key]``, ``obsm["X_pca"]``/``varm["PCs"]``/
    ``uns["pca"]``, ``obsp["distances"/"connectivities"/"knn"/"snn"]``/``uns["neighbors"]``,
    ``obsm["X_umap"]``, ``obs[cluster_key]``, and ``uns["preprocess"]`` (device, steps, seconds
    per step, parameters).

    Raises
    ------
    ValueError
        Unknown step, non-count input for normalisation / vst, or missing inputs of a step that
        is not run (the message says what to run or where the data are expected).
    RuntimeError
        ``device="cuda"`` without a CUDA device visible to cupy.
    """
    steps = _check_steps(steps)
    xp, sps, dev = _modules(device)
    codes = None
    if "hvg" in steps:  # check the arguments before any work
        n_top_genes = _check_n_top(n_top_genes, adata.n_vars)
        codes = _batch_codes(adata, batch_key)
    if copy:
        adata = adata.copy()
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def tick(name, t0):
        timings[name] = round(time.perf_counter() - t0, 4)
        logger.info("preprocess: %s done in %.2fs (%s)", name, timings[name], dev)

    array_steps = [s for s in ("normalize", "hvg", "scale", "pca") if s in steps]
    counts_dev = None
    if any(s in steps for s in ("normalize", "hvg")):
        counts = get_matrix(adata, layer)
        check_counts(counts, name="X" if layer is None else f"layers[{layer!r}]",
                     hint="pass layer='counts' (Seurat: the counts slot)")
        t0 = time.perf_counter()
        counts_dev = _to_device(counts, xp, sps, dtype)  # the one host -> device move
        tick("to_device", t0)

    data_dev = None
    norm_host = None
    if "normalize" in steps:
        t0 = time.perf_counter()
        data_dev, _, _ = _x_normalize_total(counts_dev, xp, sps, target_sum)
        data_dev = _x_log1p(data_dev, xp, sps)
        tick("normalize", t0)

    hvg_df = None
    if "hvg" in steps:
        t0 = time.perf_counter()
        hvg_df = _hvg_table(counts_dev, xp, sps, codes, int(n_top_genes),
                            "seurat_v3", span, adata.var_names, batch_key)
        tick("hvg", t0)
    counts_dev = None

    if any(s in steps for s in ("scale", "pca")):
        if hvg_df is not None:
            hv = hvg_df["highly_variable"].to_numpy()
        elif "highly_variable" in adata.var.columns:
            hv = np.asarray(adata.var["highly_variable"], dtype=bool)
        else:
            logger.info("preprocess: no var['highly_variable'] and 'hvg' not in steps: using all genes")
            hv = np.ones(adata.n_vars, dtype=bool)
        hv_idx = np.flatnonzero(hv)
        if hv_idx.size < 2:
            raise ValueError("fewer than 2 variable genes: run the 'hvg' step or set var['highly_variable'].")

    scaled_dev = None
    mean = std = None
    if "scale" in steps:
        t0 = time.perf_counter()
        if data_dev is None:
            src = get_matrix(adata, data_layer)
            data_hv = _to_device(src[:, hv_idx], xp, sps, dtype)
        else:
            data_hv = data_dev[:, xp.asarray(hv_idx)]
        scaled_dev, mean, std = _x_scale(data_hv, xp, sps, zero_center=True, max_value=max_value)
        del data_hv
        tick("scale", t0)

    pca_out = None
    if "pca" in steps:
        t0 = time.perf_counter()
        if scaled_dev is None:
            if scaled_key is None or scaled_key not in adata.obsm:
                have = ", ".join(adata.obsm.keys()) or "(none)"
                raise ValueError(f"'pca' without 'scale' needs the scaled variable genes in obsm[{scaled_key!r}]; "
                                 f"obsm has: {have}. Add 'scale' to steps.")
            scaled_dev = _to_device(np.asarray(adata.obsm[scaled_key]), xp, sps, dtype)
            if scaled_dev.shape[1] != hv_idx.size:
                raise ValueError(f"obsm[{scaled_key!r}] has {scaled_dev.shape[1]} columns but there are "
                                 f"{hv_idx.size} variable genes.")
        k = _check_n_comps(n_comps, scaled_dev.shape)
        pca_out = _x_pca(scaled_dev, xp, sps, n_comps=k, zero_center=True, svd_solver=svd_solver,
                         random_state=random_state, n_oversamples=n_oversamples, n_iter=n_iter)
        tick("pca", t0)

    # the one device -> host move of the matrix results
    if array_steps:
        t0 = time.perf_counter()
        if data_dev is not None:
            norm_host = _host(data_dev)
            data_dev = None
        scaled_host = _host(scaled_dev) if (scaled_dev is not None and "scale" in steps) else None
        scaled_dev = None
        pca_host = tuple(_host(v) if not isinstance(v, float) else v for v in pca_out) if pca_out else None
        mean_h, std_h = (_host(mean), _host(std)) if mean is not None else (None, None)
        tick("to_host", t0)

        if norm_host is not None:
            if layer is None and "counts" not in adata.layers:
                adata.layers["counts"] = adata.X
            adata.X = norm_host
            adata.uns["log1p"] = {"base": None}
        if hvg_df is not None:
            _write_hvg(adata, hvg_df, "seurat_v3", batch_key)
        if scaled_host is not None:
            m = np.full(adata.n_vars, np.nan)
            s = np.full(adata.n_vars, np.nan)
            m[hv_idx], s[hv_idx] = mean_h, std_h
            adata.var["mean"], adata.var["std"] = m, s
            if scaled_key is not None:
                adata.obsm[scaled_key] = scaled_host
        if pca_host is not None:
            emb, load, var, total = pca_host
            _write_pca(adata, emb, load, var, total, hv, None,
                       dict(zero_center=True, svd_solver=svd_solver, random_state=random_state,
                            mask_var="highly_variable", use_highly_variable=True))

    graph_steps = [s for s in ("neighbors", "umap", "clusters") if s in steps]
    if graph_steps:
        from ..tl import _graph

        if "X_pca" not in adata.obsm:
            have = ", ".join(adata.obsm.keys()) or "(none)"
            raise ValueError(f"the graph steps need obsm['X_pca']; obsm has: {have}. Add 'pca' to steps.")
        n_use = min(int(n_pcs), adata.obsm["X_pca"].shape[1])
        if "neighbors" in steps:
            t0 = time.perf_counter()
            _graph.neighbors(adata, n_neighbors=n_neighbors, n_pcs=n_use, use_rep="X_pca", snn=True,
                             snn_prune=snn_prune, random_state=random_state, device=device)
            tick("neighbors", t0)
        if "umap" in steps:
            t0 = time.perf_counter()
            _graph.umap(adata, min_dist=min_dist, random_state=random_state, device=device)
            tick("umap", t0)
        if "clusters" in steps:
            t0 = time.perf_counter()
            obsp = "snn" if cluster_on == "snn" else None
            _graph.leiden(adata, resolution=resolution, obsp=obsp, key_added=cluster_key,
                          random_state=random_state, device=device)
            tick("clusters", t0)

    timings["total"] = round(time.perf_counter() - t_all, 4)
    adata.uns["preprocess"] = dict(
        device=dev, steps=list(steps), seconds=timings,
        params=dict(target_sum=target_sum, n_top_genes=int(n_top_genes), batch_key=batch_key or "",
                    span=span, max_value=max_value if max_value is not None else "none",
                    n_comps=int(n_comps), svd_solver=svd_solver, n_pcs=int(n_pcs),
                    n_neighbors=int(n_neighbors), snn_prune=snn_prune, min_dist=min_dist,
                    resolution=resolution, cluster_on=cluster_on, random_state=random_state),
    )
    return adata if copy else None


def _check_steps(steps) -> list[str]:
    if isinstance(steps, str):
        steps = [steps]
    steps = [str(s) for s in steps]
    bad = [s for s in steps if s not in CHAIN_STEPS]
    if bad:
        raise ValueError(f"unknown step(s) {bad}; steps are {list(CHAIN_STEPS)}.")
    if not steps:
        raise ValueError(f"steps is empty; choose among {list(CHAIN_STEPS)}.")
    return [s for s in CHAIN_STEPS if s in steps]
