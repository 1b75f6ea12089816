"""Atomic file writing: write to a temporary file in the target directory, then rename.

A failed write leaves no partial file and an existing file untouched; an existing file is
replaced only with ``overwrite=True``. The R package does the same (``WriteH5AD``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = False):
    """Context manager yielding a temporary path beside ``path``; renamed onto ``path`` on success.

    Parameters
    ----------
    path
        Final file path (its directory must exist).
    overwrite
        Replace an existing file. ``False`` (default): raise before writing anything.

    Yields
    ------
    pathlib.Path
        Temporary file path in the same directory (same suffix), not yet created. Write the
        whole file there; when the block ends without an exception it is renamed onto ``path``
        (atomic on POSIX file systems), else it is removed.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False (checked before and after writing).
    FileNotFoundError
        The target directory does not exist.
    IsADirectoryError
        ``path`` is a directory.
    """
    path = Path(os.fspath(path)).expanduser().absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {str(path.parent)!r} does not exist; create it first.")
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; use overwrite=True to replace it.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.pybridge-tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.unlink()  # writers (h5py, R's saveRDS) create the file themselves
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {str(tmp)!r}")
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobbers
            except FileExistsError:
                raise FileExistsError(f"{str(path)!r} appeared while writing; not replaced (overwrite=False).") from None
            except OSError:  # file system without hard links
                if path.exists():
                    raise FileExistsError(f"{str(path)!r} appeared while writing; not replaced (overwrite=False).") from None
                os.replace(tmp, path)
            if tmp.exists():
                tmp.unlink()
    finally:
        if tmp.exists():
            tmp.unlink()


def write_h5ad_atomic(adata, path, overwrite: bool = False, **kwargs) -> Path:
    """Write ``adata`` with :meth:`anndata.AnnData.write_h5ad`, atomically.

    Parameters
    ----------
    adata
        The AnnData to write. Note that anndata's ``write_h5ad`` converts string columns of
        ``obs``/``var`` with repeated values to categoricals in ``adata`` itself (pass
        ``convert_strings_to_categoricals=False`` to keep them).
    path
        Target ``.h5ad`` path.
    overwrite
        Replace an existing file (default ``False``: raise :class:`FileExistsError`).
    **kwargs
        Passed to ``write_h5ad`` (e.g. ``compression="gzip"``).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(os.fspath(path)).expanduser().absolute()
    with atomic_path(path, overwrite=overwrite) as tmp:
        adata.write_h5ad(tmp, **kwargs)
    return path
