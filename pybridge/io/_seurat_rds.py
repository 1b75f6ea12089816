"""Seurat ``.rds`` files from Python, through an embedded R (rpy2).

The mapping is the bridge's, not a second one: the R package's exported ``rds_to_parts()`` takes
the Seurat object apart into typed parts (its ``.seurat_to_parts()``) and
:func:`pybridge.io.anndata_from_parts` builds the AnnData (the same two steps as R's
``as.AnnData()``); for writing, :func:`pybridge.io.anndata_to_parts` and R's ``parts_to_rds()``
(``.seurat_from_parts()``, as in R's ``as.Seurat()``); ``convert_file()`` runs R's
``WriteH5AD()`` / ``ReadH5AD()``. Only the transport differs: parts cross through rpy2 as plain R
vectors and lists instead of reticulate. Python calls these R functions by name
(``getExportedValue``), no R code is evaluated from strings.

Needs R with the Seurat and pybridge R packages (``R CMD INSTALL r-package``, or
``bash scripts/setup.sh``) and rpy2 < 3.6 (``pip install 'pybridge[r]'``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._core import logger
from ._atomic import atomic_path
from ._bridge import anndata_from_parts, anndata_to_parts

_INT32_MAX = 2**31 - 1

_STATE: dict = {}


_R_FUNCTIONS = ("rds_to_parts", "parts_to_rds", "convert_file")  # exported by the R package (rpy2.R)


def _r():
    """Start the embedded R (once), check the R package, return its exported functions by name."""
    if "functions" in _STATE:
        return _STATE["functions"]
    try:
        import rpy2.rinterface as ri
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading and writing Seurat .rds files needs rpy2 < 3.6 and R: pip install 'pybridge[r]' "
            f"(and R with Seurat). Import failed: {e}"
        ) from e
    ri.initr()  # the embedded R (no-op when already running; rpy2 3.5 and 3.6)
    base = ri.baseenv
    ok = base.find("requireNamespace")(ri.StrSexpVector(["pybridge"]), quietly=ri.BoolSexpVector([True]))
    if not bool(ok[0]):
        libs = ", ".join(str(v) for v in base.find(".libPaths")())
        raise ImportError(
            "the R package 'pybridge' is not installed in R's libraries (" + libs + "). Install it from the "
            "repository with `R CMD INSTALL r-package` (or `bash scripts/setup.sh`), or point R_LIBS at the "
            "library that has it."
        )
    get = base.find("getExportedValue")
    try:
        functions = {name: get(ri.StrSexpVector(["pybridge"]), ri.StrSexpVector([name])) for name in _R_FUNCTIONS}
    except Exception as e:  # an R package older than this Python package
        raise ImportError(
            f"the installed R package 'pybridge' does not export {', '.join(_R_FUNCTIONS)}: reinstall it from the "
            f"same checkout as the Python package (`R CMD INSTALL r-package`). R said: {str(e).strip()}"
        ) from None
    _STATE["ri"] = ri
    _STATE["functions"] = functions
    return functions


def _call(fun, *args, **kwargs):
    """Call an R function with Python values; R errors become Python errors with R's message."""
    ri = _STATE["ri"]
    from rpy2.rinterface_lib.embedded import RRuntimeError

    rargs = [(None, _to_r(a)) for a in args] + [(k.replace("_", "."), _to_r(v)) for k, v in kwargs.items()]
    try:
        return fun.rcall(rargs, ri.globalenv)
    except RRuntimeError as e:
        msg = str(e).strip()
        if msg.startswith("Error"):
            msg = msg.split(":", 1)[-1].strip()
        raise RuntimeError(msg) from None


# ----------------------------------------------------------------------------- R -> Python
def _from_r(x):
    """Recursively convert R parts (rpy2 SEXPs) into Python: named lists -> dict, other lists ->
    list, vectors -> NumPy arrays (copies; R matrices keep their shape), unnamed length-1 vectors
    without dim -> Python scalars, NULL -> None."""
    ri = _STATE["ri"]
    t = x.typeof
    R = ri.RTYPES
    if t == R.NILSXP:
        return None
    if t == R.VECSXP:
        items = [_from_r(v) for v in x]
        names = x.names
        if names is not ri.NULL and len(items):
            keys = [str(n) for n in names]
            if all(keys):
                return dict(zip(keys, items))
        return items
    if t in (R.REALSXP, R.INTSXP, R.LGLSXP, R.STRSXP):
        attrs = list(x.list_attrs())
        dim = [int(d) for d in x.do_slot("dim")] if "dim" in attrs else None
        if t == R.STRSXP:
            arr = np.array(["" if v is ri.NA_Character else str(v) for v in x], dtype=str)
        elif len(x) == 0:
            arr = np.zeros(0, dtype={R.REALSXP: np.float64, R.INTSXP: np.int32, R.LGLSXP: np.int32}[t])
        else:
            arr = np.array(x.memoryview(), copy=True)
            if t == R.LGLSXP:
                arr = arr != 0
        if dim is not None:
            return arr.reshape(dim, order="F") if len(dim) > 1 else arr
        if arr.size == 1:
            v = arr[0]
            return str(v) if t == R.STRSXP else (bool(v) if t == R.LGLSXP else v.item())
        return arr
    return None  # closures, environments: nothing the parts need


# ----------------------------------------------------------------------------- Python -> R
def _to_r(x):
    """Recursively convert parts (dicts, lists, NumPy arrays, scalars) into R values."""
    ri = _STATE["ri"]
    if x is None:
        return ri.NULL
    if isinstance(x, ri.Sexp):
        return x
    if isinstance(x, dict):
        lst = ri.ListSexpVector([_to_r(v) for v in x.values()])
        if len(x):
            lst.names = ri.StrSexpVector([str(k) for k in x])
        return lst
    if isinstance(x, (list, tuple)):
        return ri.ListSexpVector([_to_r(v) for v in x])
    if isinstance(x, (str, np.str_)):
        return ri.StrSexpVector([str(x)])
    if isinstance(x, (bool, np.bool_)):
        return ri.BoolSexpVector([bool(x)])
    if isinstance(x, (int, np.integer)):
        return ri.IntSexpVector([int(x)]) if abs(int(x)) <= _INT32_MAX else ri.FloatSexpVector([float(x)])
    if isinstance(x, (float, np.floating)):
        return ri.FloatSexpVector([float(x)])
    a = np.asarray(x)
    shape = a.shape
    flat = a.reshape(-1, order="F") if a.ndim > 1 else a.reshape(-1)
    kind = flat.dtype.kind
    if kind == "b":
        v = ri.BoolSexpVector.from_memoryview(memoryview(np.ascontiguousarray(flat, dtype=np.int32)))
    elif kind in "iu" and (flat.size == 0 or np.abs(flat).max() <= _INT32_MAX):
        v = ri.IntSexpVector.from_memoryview(memoryview(np.ascontiguousarray(flat, dtype=np.int32)))
    elif kind in "iuf":
        v = ri.FloatSexpVector.from_memoryview(memoryview(np.ascontiguousarray(flat, dtype=np.float64)))
    else:
        v = ri.StrSexpVector([str(s) for s in flat])
    if a.ndim > 1:
        v.do_slot_assign("dim", ri.IntSexpVector(list(shape)))
    return v


def _check_file(path) -> Path:
    path = Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist (or is not a file).")
    return path


def read_seurat(path, assay: str | None = None, *, layer: str = "counts"):
    """Read a Seurat object saved as ``.rds`` into an AnnData (through an embedded R).

    Parameters
    ----------
    path
        ``.rds`` file holding a Seurat object (SeuratObject 4 tested; v5 untested).
    assay
        Assay to read (default: the object's default assay). The counts of the other assays
        come along in ``obsm[<assay>]`` (a DataFrame), as with R's ``as.AnnData()``.
    layer
        Seurat layer that becomes ``X``: ``"counts"`` (default), ``"data"`` or ``"scale.data"``.

    Returns
    -------
    anndata.AnnData
        cells x features, mapped as R's ``as.AnnData()`` does (see :mod:`pybridge.io._bridge`):
        other layers in ``layers``, meta.data in ``obs`` (factors -> categoricals, NA kept),
        reductions in ``obsm``/``varm``, graphs in ``obsp``, Misc in ``uns``; what could not be
        carried is listed in ``uns['pybridge']['report']``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ImportError
        rpy2, R or the pybridge R package is missing (the message says how to install it).
    RuntimeError
        R could not read the file or the assay/layer does not exist (R's message, naming what exists).
    """
    path = _check_file(path)
    h = _r()
    parts_r = _call(h["rds_to_parts"], str(path.resolve()), assay=assay, layer=layer)
    parts = _from_r(parts_r)
    del parts_r
    adata = anndata_from_parts(parts)
    for note in adata.uns["pybridge"]["report"]:
        logger.info("read_seurat: %s", note)
    return adata


def write_seurat(adata, path, overwrite: bool = False, *, assay: str | None = None, X_layer: str | None = None) -> Path:
    """Write an AnnData as a Seurat object in an ``.rds`` file (through an embedded R), atomically.

    Parameters
    ----------
    adata
        The AnnData (unchanged).
    path
        Target ``.rds`` path. Written to a temporary file beside it, then renamed.
    overwrite
        Replace an existing file (default ``False``: raise :class:`FileExistsError`).
    assay
        Name of the Seurat assay (default: the one recorded in ``uns['pybridge']``, else ``"RNA"``).
    X_layer
        Seurat layer that receives ``X``: ``"counts"``, ``"data"`` or ``None`` (recorded, else
        ``"counts"`` for non-negative integers, else ``"data"``).

    Returns
    -------
    pathlib.Path
        The written path. The mapping is R's ``as.Seurat()`` on an AnnData (see
        :func:`pybridge.io.anndata_to_parts`); notes are in the object's ``Misc(obj, "pybridge.report")``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ImportError
        rpy2, R or the pybridge R package is missing.
    RuntimeError
        R could not build the Seurat object (e.g. duplicated names; R's message).
    """
    h = _r()
    path = Path(os.fspath(path)).expanduser().absolute()
    parts = anndata_to_parts(adata, X_layer=X_layer)
    with atomic_path(path, overwrite=overwrite) as tmp:
        report = _call(h["parts_to_rds"], parts, str(tmp), assay=assay)
    for note in report:
        logger.info("write_seurat: %s", note)
    return path


def convert_file(src, dst, *, assay: str | None = None, layer: str | None = None, overwrite: bool = False) -> Path:
    """Convert between ``.h5ad`` and Seurat ``.rds`` (by extension) with the R package's
    ``WriteH5AD()`` / ``ReadH5AD()`` (used by the ``pybridge convert`` command line).

    ``layer``: for ``.rds -> .h5ad`` the Seurat layer that becomes ``X`` (default ``"counts"``);
    for ``.h5ad -> .rds`` the Seurat layer that receives ``X`` (default: recorded or automatic).
    """
    src = _check_file(src)
    dst = Path(os.fspath(dst)).expanduser().absolute()
    kinds = (src.suffix.lower(), dst.suffix.lower())
    if kinds not in ((".rds", ".h5ad"), (".h5ad", ".rds")):
        raise ValueError(f"cannot convert {src.name} to {dst.name}: give one .rds and one .h5ad file "
                         "(.rds -> .h5ad or .h5ad -> .rds).")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{str(dst)!r} already exists; use overwrite (--overwrite) to replace it.")
    h = _r()
    if kinds == (".rds", ".h5ad") and layer is None:
        layer = "counts"
    notes = _call(h["convert_file"], str(src.resolve()), str(dst), assay=assay, layer=layer, overwrite=bool(overwrite))
    for note in notes:
        logger.info("%s", str(note).rstrip())
    return dst
