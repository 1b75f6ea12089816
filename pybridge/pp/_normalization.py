"""Per-cell normalisation and log transform: ``normalize_total``, ``log1p`` and ``log_normalize``.

Seurat's ``NormalizeData(normalization.method = "LogNormalize", scale.factor = 1e4)`` (Hao et
al. 2021, Cell 184:3573) is :func:`normalize_total` with ``target_sum=1e4`` followed by
:func:`log1p`, as scanpy's ``normalize_total`` + ``log1p`` (Wolf et al. 2018, Genome Biol
19:15). :func:`log_normalize` is the same on a bare matrix, for the jobs that need
log-normalised expression without an AnnData (TOSICA, scANVI, Augur, Mixscape).
"""

from __future__ import annotations

import numpy as np

from ._array import Device, host, is_sparse, modules, prepare, row_ids, row_sums, set_matrix, to_device
from ._docs import doc_copy, doc_device, doc_device_raises, doc_layer, doc_layer_raises, doc_matrix, doc_params


# ----------------------------------------------------------------------------------------------
# kernels (device arrays in, device arrays out; see _array)
# ----------------------------------------------------------------------------------------------
def _x_normalize_total(x, xp, sps, target_sum: float | None):
    """Divide every cell (row) by its total and multiply by ``target_sum``.

    Returns ``(new x, totals, target_sum used)``; cells with a zero total stay zero.
    """
    counts = row_sums(x, xp)
    if target_sum is None:
        pos = counts[counts > 0]
        target_sum = float(xp.median(pos)) if pos.size else 1.0
    factor = counts / x.dtype.type(target_sum)
    factor = xp.where(factor > 0, factor, xp.ones_like(factor)).astype(x.dtype)
    if is_sparse(x):
        out = sps.csr_matrix((x.data / factor[row_ids(x, xp)], x.indices, x.indptr), shape=x.shape)
    else:
        out = x / factor[:, None]
    return out, counts, target_sum


def _x_log1p(x, xp, sps, base: float | None = None):
    """``log(1 + x)`` (divided by ``log(base)`` when given), a new array; sparse stays sparse."""
    if is_sparse(x):
        data = xp.log1p(x.data)
        if base is not None:
            data /= np.log(base)
        return sps.csr_matrix((data, x.indices, x.indptr), shape=x.shape)
    out = xp.log1p(x)
    if base is not None:
        out /= np.log(base)
    return out


def _x_log_normalize(x, xp, sps, target_sum: float | None):
    """:func:`_x_normalize_total` then :func:`_x_log1p` (natural log): Seurat's LogNormalize."""
    out, _, _ = _x_normalize_total(x, xp, sps, target_sum)
    return _x_log1p(out, xp, sps)


# ----------------------------------------------------------------------------------------------
# public functions
# ----------------------------------------------------------------------------------------------
@doc_params(doc_layer=doc_layer, doc_copy=doc_copy, doc_device=doc_device, doc_layer_raises=doc_layer_raises)
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
    {doc_layer}
    inplace
        ``False``: return ``{{"X": normalised matrix, "norm_factor": totals}}`` (host arrays) and
        leave ``adata`` untouched.
    {doc_copy}
    {doc_device}

    Returns
    -------
    ``None`` (``adata`` changed), the dict (``inplace=False``) or the copy (``copy=True``).
    The matrix keeps a float input dtype (float32 for integer input).

    Raises
    ------
    {doc_layer_raises}
    """
    adata, x, xp, sps = prepare(adata, layer, device, copy)
    out, counts, _ = _x_normalize_total(x, xp, sps, target_sum)
    out, counts = host(out), host(counts)
    if not inplace:
        return {"X": out, "norm_factor": counts}
    set_matrix(adata, layer, out)
    if key_added is not None:
        adata.obs[key_added] = np.asarray(counts, dtype=np.float64)
    return adata if copy else None


@doc_params(doc_layer=doc_layer, doc_copy=doc_copy, doc_device=doc_device, doc_layer_raises=doc_layer_raises)
def log1p(adata, *, base: float | None = None, layer: str | None = None, copy: bool = False,
          device: Device = "auto"):
    """Natural logarithm of one plus the values (``log(1 + x)``), as :func:`scanpy.pp.log1p`.

    Parameters
    ----------
    adata
        AnnData with normalised values in ``X`` (or ``layers[layer]``).
    base
        Logarithm base (``None``: natural log, as Seurat's ``LogNormalize``).
    {doc_layer}
    {doc_copy}
    {doc_device}

    Returns
    -------
    ``None`` or the copy. ``uns["log1p"] = {{"base": base}}`` is recorded as scanpy does.

    Raises
    ------
    {doc_layer_raises}
    """
    adata, x, xp, sps = prepare(adata, layer, device, copy)
    set_matrix(adata, layer, host(_x_log1p(x, xp, sps, base)))
    adata.uns["log1p"] = {"base": base}
    return adata if copy else None


@doc_params(doc_matrix=doc_matrix, doc_device=doc_device, doc_device_raises=doc_device_raises)
def log_normalize(x, target_sum: float | None = 1e4, *, dtype=np.float32, device: Device = "cpu"):
    """``log1p(x / cell total * target_sum)`` of a bare matrix: Seurat's ``LogNormalize``.

    The matrix-level entry point of :func:`normalize_total` + :func:`log1p` (the same kernels),
    for jobs that log-normalise counts without an AnnData. No check that ``x`` holds counts:
    callers check (:func:`pybridge._core.check_counts`) where it matters.

    Parameters
    ----------
    {doc_matrix}
    target_sum
        Total per cell before the log (Seurat's ``scale.factor``, default 1e4); ``None``: the
        median of the non-zero cell totals.
    dtype
        Float dtype of the result (default float32); ``None``: the input's float dtype.
    {doc_device}

    Returns
    -------
    A new matrix on the host (CSR for sparse input, else a numpy array), cells x genes, of
    ``dtype``, sharing no memory with ``x``. Cells with a zero total stay zero.

    Raises
    ------
    {doc_device_raises}
    """
    xp, sps, _ = modules(device)
    xd = to_device(x, xp, sps, dtype)
    out = host(_x_log_normalize(xd, xp, sps, target_sum))
    if is_sparse(x) and is_sparse(out) and xp is np and np.shares_memory(out.indices, xd.indices):
        out.indices, out.indptr = out.indices.copy(), out.indptr.copy()  # the kernels reuse the structure
    return out
