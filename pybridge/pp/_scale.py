"""Scaling genes to unit variance (and zero mean): ``scale`` (AnnData) and ``scale_matrix`` (bare matrix).

Seurat's ``ScaleData`` (``scale.max = 10``) and scanpy's ``scale``: unbiased standard deviation
(n - 1), genes with zero variance left unscaled, optional clipping.
"""

from __future__ import annotations

from ._array import Device, host, is_sparse, mean_var, modules, prepare, set_matrix, to_device
from ._docs import doc_copy, doc_device, doc_device_raises, doc_layer, doc_layer_raises, doc_matrix, doc_params


def _x_scale(x, xp, sps, *, zero_center: bool, max_value: float | None):
    """Scale genes (columns) to unit variance (and zero mean), clipped; a new array.

    Dense result when centring; sparse input stays sparse without centring. Returns
    ``(scaled, mean, std)`` (statistics in float64, ``std`` 1 where the variance is 0).
    """
    mean, var = mean_var(x, xp)
    if is_sparse(x):
        out = x.toarray() if zero_center else x.copy()
    else:
        out = x.copy()
    std = xp.sqrt(var)
    std[std == 0] = 1
    if is_sparse(out):  # no centering: scale the stored values only, stays sparse
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


@doc_params(doc_layer=doc_layer, doc_copy=doc_copy, doc_device=doc_device, doc_layer_raises=doc_layer_raises)
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
    {doc_layer}
    {doc_copy}
    {doc_device}

    Returns
    -------
    ``None`` or the copy; ``X`` (or the layer) becomes the scaled matrix, and ``var["mean"]``,
    ``var["std"]`` (float64) hold the statistics used.

    Raises
    ------
    {doc_layer_raises}
    """
    adata, x, xp, sps = prepare(adata, layer, device, copy)
    out, mean, std = _x_scale(x, xp, sps, zero_center=zero_center, max_value=max_value)
    set_matrix(adata, layer, host(out))
    adata.var["mean"] = host(mean)
    adata.var["std"] = host(std)
    return adata if copy else None


@doc_params(doc_matrix=doc_matrix, doc_device=doc_device, doc_device_raises=doc_device_raises)
def scale_matrix(x, *, zero_center: bool = True, max_value: float | None = None, dtype=None,
                 device: Device = "cpu"):
    """Scale the columns (genes) of a bare matrix: the matrix-level entry point of :func:`scale`.

    Parameters
    ----------
    {doc_matrix}
    zero_center, max_value
        As :func:`scale` (Seurat's ``ScaleData``: ``zero_center=True, max_value=10``).
    dtype
        Float dtype of the result (default: the input's float dtype, float32 for integers).
    {doc_device}

    Returns
    -------
    ``(scaled, mean, std)`` on the host: the scaled matrix (a new array: dense when centring,
    else of the input's kind), the per-gene means and standard deviations used (float64; std
    1 for constant genes).

    Raises
    ------
    {doc_device_raises}
    """
    xp, sps, _ = modules(device)
    out, mean, std = _x_scale(to_device(x, xp, sps, dtype), xp, sps, zero_center=zero_center,
                              max_value=max_value)
    return host(out), host(mean), host(std)
