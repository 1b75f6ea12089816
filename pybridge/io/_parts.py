"""Typed "parts" that cross between R and Python.

R's reticulate 1.28 converts R vectors to Python lists, loses NA in logical and integer
columns, and fails on current scipy sparse matrices. pybridge therefore never relies on
reticulate's own conversion for data: each side takes an object apart into plain typed
arrays ("parts") and the other side assembles them. The mapping rules live here, once;
the R package only splits and assembles.

Column parts (one dict per data-frame column)::

    {"kind": "factor",    "values": int32 codes (0-based, -1 = NA), "levels": [str], "ordered": bool}
    {"kind": "logical",   "values": bool,    "mask": bool (True = NA)}
    {"kind": "integer",   "values": int32,   "mask": bool}
    {"kind": "double",    "values": float64, "mask": bool}
    {"kind": "character", "values": str,     "mask": bool}

Sparse matrix parts: ``{"x": float64, "i": int32, "p": int32, "dim": (nrow, ncol)}`` in R's
dgCMatrix (compressed sparse column) layout. A genes x cells dgCMatrix has exactly the arrays
of a cells x genes CSR matrix, so no transpose copy is needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

INT32_MAX = 2**31 - 1


def _arr(x, dtype=None) -> np.ndarray:
    """1-d ndarray from an R vector as reticulate hands it (array view, list, or scalar)."""
    if x is None:
        return np.zeros(0, dtype=dtype or float)
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    return np.atleast_1d(a).reshape(-1)


def _strs(x) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return [str(v) for v in np.atleast_1d(np.asarray(x, dtype=object)).reshape(-1)]


# ----------------------------------------------------------------------------- columns
def column_from_parts(part: dict, n: int):
    """Build a pandas array (length ``n``) from one column's parts (see module docstring)."""
    kind = part["kind"]
    mask = _arr(part.get("mask"), bool) if part.get("mask") is not None else None
    if mask is not None and mask.size == 0 and n > 0:
        mask = None
    if kind == "factor":
        codes = _arr(part["values"], np.int64) if n else np.zeros(0, np.int64)
        levels = _strs(part.get("levels"))
        return pd.Categorical.from_codes(codes, categories=pd.Index(levels, dtype=object),
                                         ordered=bool(part.get("ordered", False)))
    if kind == "logical":
        vals = _arr(part["values"], bool) if n else np.zeros(0, bool)
        if mask is not None and mask.any():
            return pd.arrays.BooleanArray(vals, mask)
        return vals
    if kind == "integer":
        vals = _arr(part["values"], np.int32) if n else np.zeros(0, np.int32)
        if mask is not None and mask.any():
            return pd.arrays.IntegerArray(vals, mask)
        return vals
    if kind == "double":
        vals = np.array(_arr(part["values"], np.float64)) if n else np.zeros(0)
        if mask is not None and mask.any():
            vals[mask] = np.nan
        return vals
    if kind == "character":
        vals = _strs(part["values"]) if n else []
        arr = np.array(vals, dtype=object)
        if mask is not None and mask.any():
            arr[mask] = np.nan
            return pd.array(arr, dtype="string")
        return arr
    raise ValueError(f"unknown column kind {kind!r}")


def df_from_parts(index, names, columns, n: int | None = None) -> pd.DataFrame:
    """Build a DataFrame from row names, column names and column parts (lists in R order)."""
    idx = pd.Index(_strs(index), dtype=object)
    n = len(idx) if n is None else n
    names = _strs(names)
    if isinstance(columns, dict):
        columns = [columns]
    data = {}
    for name, part in zip(names, columns or []):
        data[name] = column_from_parts(part, n)
    df = pd.DataFrame(data, index=idx)
    return df[names] if names else df


def column_to_parts(s: pd.Series) -> tuple[dict, str | None]:
    """Split a pandas column into parts for R. Returns ``(parts, note)``; ``note`` says what changed."""
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        cats = dt.categories
        note = None
        if not (cats.dtype == object or pd.api.types.is_string_dtype(cats.dtype)):
            note = f"categories of {s.name!r} ({cats.dtype}) became character levels"
        return {"kind": "factor", "values": s.cat.codes.to_numpy().astype(np.int32),
                "levels": np.array([str(c) for c in cats], dtype=str), "ordered": bool(dt.ordered)}, note
    if pd.api.types.is_bool_dtype(dt):
        if isinstance(dt, pd.BooleanDtype):
            mask = s.isna().to_numpy()
            return {"kind": "logical", "values": s.fillna(False).to_numpy(dtype=bool), "mask": mask}, None
        return {"kind": "logical", "values": s.to_numpy(dtype=bool), "mask": np.zeros(len(s), bool)}, None
    if pd.api.types.is_integer_dtype(dt):
        mask = s.isna().to_numpy()
        vals = s.to_numpy(dtype="float64", na_value=0) if mask.any() else s.to_numpy()
        if len(vals) and (np.nanmax(np.abs(vals)) > INT32_MAX):
            return {"kind": "double", "values": np.asarray(vals, np.float64), "mask": mask}, \
                f"{s.name!r} has integers beyond R's 32-bit range; stored as double"
        return {"kind": "integer", "values": np.asarray(vals).astype(np.int32), "mask": mask}, None
    if pd.api.types.is_float_dtype(dt):
        mask = s.isna().to_numpy()
        return {"kind": "double", "values": s.to_numpy(dtype=np.float64, na_value=np.nan), "mask": mask}, None
    if pd.api.types.is_string_dtype(dt) or dt == object:
        mask = s.isna().to_numpy()
        vals = np.array(["" if m else str(v) for v, m in zip(s.to_numpy(dtype=object), mask)], dtype=str)
        note = None
        if dt == object and len(s) and not all(isinstance(v, str) for v in s[~mask]):
            note = f"{s.name!r} held non-string objects; converted with str()"
        return {"kind": "character", "values": vals.astype(str), "mask": mask}, note
    # datetimes, periods, intervals, complex...: carried as text, reported
    mask = s.isna().to_numpy()
    return {"kind": "character", "values": s.astype(str).to_numpy(dtype=str), "mask": mask}, \
        f"{s.name!r} ({dt}) has no R column type here; carried as character"


def df_to_parts(df: pd.DataFrame) -> dict:
    """Split a DataFrame into ``{"index", "names", "columns", "notes"}`` for R."""
    cols, notes = [], []
    for name in df.columns:
        part, note = column_to_parts(df[name].rename(str(name)))
        cols.append(part)
        if note:
            notes.append(note)
    return {"index": np.array([str(i) for i in df.index], dtype=str),
            "names": np.array([str(c) for c in df.columns], dtype=str),
            "columns": cols, "notes": notes}


# ----------------------------------------------------------------------------- matrices
def _part_array(part: dict, key: str) -> np.ndarray:
    """An array from parts: a zero-copy view when R sent an address, else what reticulate sent."""
    addr = part.get(f"{key}_address")
    if addr is not None:
        return r_vector_view(addr, part[f"{key}_length"], part[f"{key}_type"], part.get("keepalive"))
    return _arr(part[key])


def sparse_from_parts(part: dict, *, transpose: bool = True):
    """Build a scipy sparse matrix from dgCMatrix parts without copying the arrays.

    Parameters
    ----------
    part
        ``{"x", "i", "p", "dim"}``: R's dgCMatrix slots. ``x`` float64, ``i``/``p`` int32, as
        read-only NumPy views of R memory when reticulate hands views.
    transpose
        ``True`` (default): return the transpose (``dim[1] x dim[0]``) as CSR, i.e. a genes x
        cells dgCMatrix becomes a cells x genes CSR with the *same* arrays (no copy).
        ``False``: return the matrix itself as CSC (``dim[0] x dim[1]``), also without copy.

    Notes
    -----
    The arrays are shared with R and read-only: a consumer that writes into the matrix must
    copy it first (``m.copy()``); pybridge's jobs do.
    """
    x, i, p = (_part_array(part, k) for k in ("x", "i", "p"))
    if x.dtype != np.float64 and x.dtype != np.float32:
        x = x.astype(np.float64)
    dim = [int(d) for d in _arr(part["dim"])]
    nrow, ncol = dim
    if len(x) == 0:  # reticulate hands empty vectors as lists
        x, i = np.zeros(0, np.float64), np.zeros(0, np.int32)
    if len(p) != ncol + 1:
        raise ValueError(f"sparse parts: p has length {len(p)}, expected {ncol + 1}")
    cls = sp.csr_matrix if transpose else sp.csc_matrix
    shape = (ncol, nrow) if transpose else (nrow, ncol)
    # the constructor keeps the given arrays when dtypes are already right (copy=False)
    m = cls((x, i.astype(np.int32, copy=False), p.astype(np.int32, copy=False)), shape=shape, copy=False)
    return m


def dense_from_r(x, *, transpose: bool = False) -> np.ndarray:
    """A dense R matrix (column-major) as ndarray; ``transpose=True`` gives ``t(x)`` as a C-order view."""
    a = np.asarray(x)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    return a.T if transpose else a


def sparse_to_parts(m, *, transpose: bool = True) -> dict:
    """Parts for an R dgCMatrix from a scipy sparse matrix.

    ``transpose=True``: ``m`` is cells x genes and R receives genes x cells (CSR arrays are reused
    as CSC arrays, no transpose copy). ``transpose=False``: R receives ``m`` itself.

    Raises
    ------
    OverflowError
        If the matrix has more than 2^31-1 non-zeros (R's dgCMatrix indices are 32-bit).
    """
    if transpose:
        m = m.tocsr() if m.format != "csr" else m
    else:
        m = m.tocsc() if m.format != "csc" else m
    if m.nnz > INT32_MAX:
        raise OverflowError(
            f"the matrix has {m.nnz:,} non-zeros; an R dgCMatrix holds at most 2^31-1 = {INT32_MAX:,}. "
            "Split the object (e.g. by sample) or subset features before converting."
        )
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()  # also sorts indices, which dgCMatrix requires
    nrow, ncol = (m.shape[1], m.shape[0]) if transpose else m.shape
    return {"x": np.asarray(m.data, dtype=np.float64), "i": np.asarray(m.indices, dtype=np.int32),
            "p": np.asarray(m.indptr, dtype=np.int32), "dim": np.array([nrow, ncol], dtype=np.int32)}


def matrix_to_parts(m, *, transpose: bool = True) -> dict:
    """Parts for R from a dense or sparse matrix: ``{"sparse": parts}`` or ``{"dense": F-order array}``.

    With ``transpose=True`` R receives the transpose of ``m`` (cells x genes -> genes x cells).
    """
    if sp.issparse(m):
        return {"sparse": sparse_to_parts(m, transpose=transpose)}
    a = np.asarray(m)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    a = a.T if transpose else a
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    return {"dense": np.asfortranarray(a, dtype=np.float64)}


class _RMemory:
    """Exposes R-owned memory through the array interface and keeps the R object alive."""

    def __init__(self, address: int, length: int, typestr: str, keepalive):
        self._keepalive = keepalive  # an R closure holding the vector: R will not free it
        self.__array_interface__ = {"data": (int(address), True), "shape": (int(length),),
                                    "typestr": typestr, "version": 3}


_TYPESTR = {"double": "<f8", "integer": "<i4", "logical": "<i4"}


def r_vector_view(address, length, rtype: str, keepalive) -> np.ndarray:
    """Read-only NumPy view of an R vector's memory (no copy).

    Parameters
    ----------
    address
        The data address as a decimal string (from the R package's C routine ``pyb_address``).
    length
        Number of elements.
    rtype
        ``"double"`` (float64), ``"integer"`` (int32) or ``"logical"`` (int32).
    keepalive
        Any Python object that holds a reference to the R vector; stored as the array's base so
        R cannot free the memory while NumPy uses it.
    """
    n = int(length)
    if n == 0:
        return np.zeros(0, dtype=np.dtype(_TYPESTR[rtype]))
    return np.asarray(_RMemory(int(address), n, _TYPESTR[rtype], keepalive))
