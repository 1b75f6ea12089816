"""Array plumbing of ``pp``: the only place that knows about host <-> device.

Every numerical kernel of ``pp`` (the ``_x_*`` functions of each step's module) takes the array
module ``xp`` (numpy or cupy) and its sparse module ``sps`` (scipy.sparse or cupyx.scipy.sparse),
chosen once by :func:`modules` through :mod:`pybridge._device`, so the very same lines run on the
CPU and on a CUDA GPU. This module moves matrices to the device (:func:`to_device`) and back
(:func:`host`), and holds the per-gene / per-cell sums the steps share.
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal

import numpy as np
import scipy.sparse as sp

from .._core import get_matrix
from .._device import get_array_module, get_sparse_module, resolve_device, to_host

Device = Literal["auto", "cpu", "cuda"]


def modules(device: str) -> tuple[ModuleType, ModuleType, str]:
    """``(xp, sps, resolved_device)`` for ``device``; raises the clear error of ``resolve_device``."""
    dev = resolve_device(device, backend="cupy")
    xp = get_array_module(dev)
    return xp, get_sparse_module(xp), dev


def float_dtype(x, dtype=None) -> np.dtype:
    """``dtype`` when given, else the float dtype of ``x`` (float32 for integer input)."""
    if dtype is not None:
        return np.dtype(dtype)
    kind = np.dtype(x.dtype)
    return kind if kind in (np.float32, np.float64) else np.dtype(np.float32)


def is_sparse(x) -> bool:
    """scipy or cupyx sparse matrix."""
    if sp.issparse(x):
        return True
    return type(x).__module__.startswith("cupyx.scipy.sparse")


def to_device(x, xp: ModuleType, sps: ModuleType, dtype=None):
    """Host matrix -> device matrix (CSR for sparse), cast to a float dtype. Never writes into ``x``.

    On CPU this is a no-op when ``x`` is already CSR of the right dtype: the result then shares
    memory with ``x`` (possibly a read-only view of R memory), which the kernels never modify.
    Device (cupy) input stays on the device.
    """
    dt = float_dtype(x, dtype)
    if is_sparse(x):
        m = x.tocsr() if x.format != "csr" else x
        if type(x).__module__.startswith("cupy"):
            return m.astype(dt) if m.dtype != dt else m
        if m.dtype != dt:
            m = m.astype(dt)
        if xp.__name__ == "numpy":
            return sp.csr_matrix(m) if not isinstance(m, sp.csr_matrix) else m
        return sps.csr_matrix(m)  # host -> device copy
    return xp.asarray(x, dtype=dt)


def host(x):
    """Device -> host (dense or sparse); host arrays pass through."""
    return to_host(x)


def prepare(adata, layer: str | None, device: str, copy: bool):
    """The prologue of the AnnData step functions: ``(adata or its copy, matrix on the device, xp, sps)``.

    The device is resolved (clear errors) before the copy; ``layer`` is looked up with
    :func:`pybridge._core.get_matrix` (a KeyError listing the layers).
    """
    xp, sps, _ = modules(device)
    if copy:
        adata = adata.copy()
    return adata, to_device(get_matrix(adata, layer), xp, sps), xp, sps


def set_matrix(adata, layer: str | None, value) -> None:
    """``adata.X = value`` or ``adata.layers[layer] = value``."""
    if layer is None:
        adata.X = value
    else:
        adata.layers[layer] = value


def ravel(a, xp: ModuleType):
    return xp.asarray(a).ravel()


def row_sums(x, xp: ModuleType):
    """Per-cell (row) sums, a 1-d array of ``x``'s dtype."""
    if is_sparse(x):
        return ravel(x.sum(axis=1), xp)
    return x.sum(axis=1)


def row_ids(x, xp: ModuleType):
    """Row index of every stored value of a CSR matrix, O(nnz).

    numpy: ``repeat``; cupy (whose ``repeat`` takes no array of repeats): count the row starts,
    then a cumulative sum. The only place where the two array modules need different calls.
    """
    if xp.__name__ == "numpy":
        return np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
    nnz = int(x.indptr[-1])
    marks = xp.bincount(x.indptr[1:-1], minlength=nnz + 1)[:nnz]
    return xp.cumsum(marks, dtype=xp.int64)


def col_sums(x, xp: ModuleType, *, clip=None, chunk: int = 16384):
    """Per-gene (column) sums and sums of squares of ``x`` (or of ``min(x, clip)``), in float64.

    Sparse: one float64 copy of the stored values, two weighted ``bincount`` over the column
    indices. Dense: blocks of ``chunk`` rows, so the float64 temporaries stay small.
    """
    if is_sparse(x):
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


def mean_var(x, xp: ModuleType):
    """Per-gene mean and unbiased variance (ddof=1, R's convention), float64."""
    n = x.shape[0]
    s1, s2 = col_sums(x, xp)
    mean = s1 / n
    var = s2 / n - mean**2
    if n > 1:
        var *= n / (n - 1)
    return mean, var
