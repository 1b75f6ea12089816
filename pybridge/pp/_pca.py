"""Principal component analysis: ``pca`` (AnnData) and ``pca_matrix`` (bare matrix).

Solvers, written once against the array module except ARPACK:

- ``"covariance_eigh"``: eigenvectors of the gene-gene Gram matrix (exact up to rounding;
  scanpy's ``svd_solver="covariance_eigh"``), Lanczos (ARPACK / cupyx) above 1,000 genes;
- ``"randomized"``: randomized subspace iteration of Halko, Martinsson & Tropp 2011 (SIAM Rev
  53:217), as scikit-learn's ``randomized_svd``;
- ``"arpack"``: :func:`scipy.sparse.linalg.svds` (Lehoucq et al. 1998), CPU only.

Signs are made deterministic as scikit-learn's ``svd_flip`` (largest loading positive).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._core import get_matrix
from ._array import Device, col_sums, host, is_sparse, mean_var, modules, to_device
from ._docs import doc_copy, doc_device, doc_device_raises, doc_layer, doc_matrix, doc_params

SOLVERS = ("auto", "covariance_eigh", "randomized", "arpack")


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
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
    """PCA of dense (or sparse, densified) ``x``: embeddings, loadings (genes x comps), variances, total."""
    a = x.toarray() if is_sparse(x) else x.copy()
    n = a.shape[0]
    if zero_center:
        a -= (col_sums(a, xp)[0] / n).astype(a.dtype)
    # total variance of the (centred) data: the denominator of variance_ratio (Seurat: total.variance)
    _, v = mean_var(a, xp)
    total_var = float(v.sum())
    if svd_solver == "auto":
        svd_solver = "covariance_eigh" if a.shape[1] <= 5000 else "randomized"
    if svd_solver == "covariance_eigh":
        u, s, vt = _x_covariance_eigh(a, n_comps, xp, sps, random_state=random_state)
    elif svd_solver == "randomized":
        u, s, vt = _x_randomized_svd(a, n_comps, xp, n_oversamples=n_oversamples, n_iter=n_iter,
                                     random_state=random_state)
    else:  # arpack (checked by _check_solver)
        u, s, vt = (np.asarray(v) for v in _arpack_svd(a, n_comps, random_state))
    u, vt = _x_svd_flip(u, vt, xp)
    emb = u * s[None, :]
    variance = s.astype(xp.float64) ** 2 / max(n - 1, 1)
    return emb, vt.T, variance, total_var


# ----------------------------------------------------------------------------------------------
# argument checks and writing (shared with run_chain)
# ----------------------------------------------------------------------------------------------
def _check_solver(svd_solver: str, xp) -> str:
    if svd_solver not in SOLVERS:
        raise ValueError("svd_solver must be 'auto', 'covariance_eigh', 'randomized' or 'arpack', "
                         f"got {svd_solver!r}.")
    if svd_solver == "arpack" and xp.__name__ != "numpy":
        raise ValueError("svd_solver='arpack' runs on the CPU only; use svd_solver='randomized' "
                         "with device='cuda' (or device='cpu').")
    return svd_solver


def _check_n_comps(n_comps, shape) -> int:
    limit = min(shape) - 1
    if n_comps is None:
        n_comps = min(50, limit)
    n_comps = int(n_comps)
    if n_comps < 1 or n_comps > limit:
        raise ValueError(f"n_comps={n_comps} must be between 1 and min(n_cells, n_genes) - 1 = {limit} "
                         f"(the data used has {shape[0]} cells x {shape[1]} genes).")
    return n_comps


_EMPTY = object()


def _mask(adata, mask_var):
    """``(mask parameter, boolean gene mask or None)``; default: ``"highly_variable"`` when present."""
    if mask_var is _EMPTY:
        mask_var = "highly_variable" if "highly_variable" in adata.var.columns else None
    if mask_var is None:
        return None, None
    if isinstance(mask_var, str):
        if mask_var not in adata.var.columns:
            cols = ", ".join(map(str, adata.var.columns)) or "(none)"
            raise KeyError(f"mask_var {mask_var!r} is not a column of var. Columns that exist: {cols}. "
                           "Run pybridge.pp.highly_variable_genes first, or pass mask_var=None.")
        return mask_var, np.asarray(adata.var[mask_var], dtype=bool)
    m = np.asarray(mask_var, dtype=bool)
    if m.shape != (adata.n_vars,):
        raise ValueError(f"mask_var has shape {m.shape}; a boolean vector of length n_vars={adata.n_vars} is needed.")
    return mask_var, m


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
# public functions
# ----------------------------------------------------------------------------------------------
@doc_params(doc_layer=doc_layer, doc_copy=doc_copy, doc_device=doc_device, doc_device_raises=doc_device_raises)
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
    {doc_layer}
    zero_center
        Centre the genes before the SVD (PCA); ``False``: truncated SVD.
    svd_solver
        ``"auto"`` (``"covariance_eigh"`` up to 5,000 genes, else ``"randomized"``),
        ``"covariance_eigh"`` (exact, from the gene-gene Gram matrix), ``"randomized"`` (Halko
        et al. 2011; both run on CPU and GPU) or ``"arpack"`` (:func:`scipy.sparse.linalg.svds`,
        CPU only, as scanpy's default).
    random_state
        Seed of the random start (all solvers).
    mask_var
        Boolean vector or ``var`` column of the genes to use; default ``"highly_variable"`` when that
        column exists, else all genes; ``None``: all genes.
    key_added
        Keys for the results (default: ``obsm["X_pca"]``, ``varm["PCs"]``, ``uns["pca"]``).
    n_oversamples, n_iter
        Randomized SVD: extra random directions and power iterations (more = closer to exact).
    {doc_copy}
    {doc_device}

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
    KeyError
        ``mask_var`` or ``layer`` not in ``adata`` (the message lists what exists).
    {doc_device_raises}
    """
    xp, sps, _ = modules(device)
    svd_solver = _check_solver(svd_solver, xp)
    if copy:
        adata = adata.copy()
    mask_param, mask = _mask(adata, mask_var)
    x = get_matrix(adata, layer)
    if mask is not None:
        x = x[:, np.flatnonzero(mask)]
    n_comps = _check_n_comps(n_comps, x.shape)
    xd = to_device(x, xp, sps)
    emb, loadings, variance, total = _x_pca(xd, xp, sps, n_comps=n_comps, zero_center=zero_center,
                                            svd_solver=svd_solver, random_state=random_state,
                                            n_oversamples=n_oversamples, n_iter=n_iter)
    _write_pca(adata, host(emb), host(loadings), host(variance), total, mask, key_added,
               dict(zero_center=zero_center, svd_solver=svd_solver, random_state=random_state,
                    mask_var=mask_param if isinstance(mask_param, str) or mask_param is None else "custom",
                    use_highly_variable=mask_param == "highly_variable", layer=layer))
    return adata if copy else None


class PCAResult(NamedTuple):
    """Result of :func:`pca_matrix` (host arrays)."""

    embedding: np.ndarray  #: cells x n_comps, the data's float dtype
    loadings: np.ndarray  #: genes x n_comps
    variance: np.ndarray  #: eigenvalues (ddof=1), float64
    variance_ratio: np.ndarray  #: variance / total variance of the (centred) data


@doc_params(doc_matrix=doc_matrix, doc_device=doc_device, doc_device_raises=doc_device_raises)
def pca_matrix(x, n_comps: int | None = None, *, zero_center: bool = True, svd_solver: str = "auto",
               random_state: int = 0, n_oversamples: int = 20, n_iter: int = 7, dtype=None,
               device: Device = "cpu") -> PCAResult:
    """PCA of a bare matrix: the matrix-level entry point of :func:`pca` (the same kernels).

    Parameters
    ----------
    {doc_matrix}
        Usually scaled (:func:`pybridge.pp._scale.scale_matrix`); sparse input is densified.
    n_comps, zero_center, svd_solver, random_state, n_oversamples, n_iter
        As :func:`pca`.
    dtype
        Float dtype of the computation (default: the input's float dtype, float32 for integers).
    {doc_device}

    Returns
    -------
    :class:`PCAResult` ``(embedding, loadings, variance, variance_ratio)``.

    Raises
    ------
    ValueError
        An unknown solver, ``"arpack"`` on the GPU, or ``n_comps`` out of 1..min(shape) - 1.
    {doc_device_raises}
    """
    xp, sps, _ = modules(device)
    svd_solver = _check_solver(svd_solver, xp)
    n_comps = _check_n_comps(n_comps, x.shape)
    emb, loadings, variance, total = _x_pca(to_device(x, xp, sps, dtype), xp, sps, n_comps=n_comps,
                                            zero_center=zero_center, svd_solver=svd_solver,
                                            random_state=random_state, n_oversamples=n_oversamples,
                                            n_iter=n_iter)
    variance = np.asarray(host(variance), dtype=np.float64)
    return PCAResult(host(emb), host(loadings), variance, variance / total)
