"""Atomic file writing: write to a temporary file in the target directory, then rename.

A failed write leaves no partial file and an existing file untouched; an existing file is
replaced only with ``overwrite=True``. The R package does the same (``WriteH5AD``, in
r-package/R/h5ad-files.R), with the same temporary names:
``.<stem>.pybridge-tmp-<host>-<pid>-<random><suffix>`` (the marker is ``LAYOUT['tmp_marker']``).
A write that was killed (``kill -9``, power loss) leaves such a file; the next write to that
directory (from R or Python) removes it once its process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
from pathlib import Path

from ._layout import LAYOUT


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())


def _tmp_name(path: Path) -> Path:
    rand = secrets.token_hex(4)
    return path.parent / f".{path.stem}{LAYOUT['tmp_marker']}{_host()}-{os.getpid()}-{rand}{path.suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_tmp(directory) -> list[str]:
    """Remove the temporary files of interrupted writes in ``directory``.

    Only this host's files whose writing process is gone are removed (files of other hosts on a
    shared file system, and of writes still running, are left alone).

    Returns
    -------
    list of str
        The names removed.
    """
    pat = re.compile(r"^\..*" + re.escape(LAYOUT["tmp_marker"]) + r"([A-Za-z0-9]+)-([0-9]+)-[a-z0-9]+")
    gone = []
    try:
        names = os.listdir(directory)
    except OSError:
        return gone
    for name in names:
        m = pat.match(name)
        if not m or m.group(1) != _host() or int(m.group(2)) == os.getpid() or _pid_alive(int(m.group(2))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            gone.append(name)
    return gone


def _why(e: OSError, path: Path) -> OSError:
    """An OSError of a write, re-raised with words saying what happened (same errno)."""
    d = str(path.parent)
    if e.errno == errno.ENOSPC:
        free = shutil.disk_usage(d).free
        msg = f"the file system of {d!r} is full (No space left on device; {free / 2**20:.1f} MiB free)"
    elif e.errno == errno.EROFS:
        msg = f"{d!r} is on a read-only file system"
    elif e.errno in (errno.EACCES, errno.EPERM):
        msg = f"no permission to write in {d!r}"
    elif e.errno == errno.EDQUOT:
        msg = f"the disk quota for {d!r} is exceeded"
    else:
        return e
    state = "the existing file is untouched" if path.exists() else "nothing was written"
    return OSError(e.errno, f"could not write {str(path)!r}: {msg}; {state}. Free space, or write elsewhere.")


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = False, *, need_bytes: int | None = None):
    """Context manager yielding a temporary path beside ``path``; renamed onto ``path`` on success.

    Parameters
    ----------
    path
        Final file path (its directory must exist).
    overwrite
        Replace an existing file. ``False`` (default): raise before writing anything.
    need_bytes
        Bytes the write needs (an estimate): checked against the free space of the target's file
        system before anything is written (h5py crashes the interpreter on a full disk).

    Yields
    ------
    pathlib.Path
        Temporary file path in the same directory (same suffix, named
        ``.<stem>.pybridge-tmp-<host>-<pid>-<random><suffix>``), not yet created. Write the whole
        file there; when the block ends without an exception it is renamed onto ``path`` (atomic
        on POSIX file systems), else it is removed. Temporary files of earlier writes to the
        directory whose process is gone (killed writes) are removed first.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False (checked before and after writing).
    FileNotFoundError
        The target directory does not exist.
    IsADirectoryError
        ``path`` is a directory.
    OSError
        The file system is full (``errno.ENOSPC``; also before writing when ``need_bytes`` is
        more than the free space), read-only (``EROFS``) or not writable (``EACCES``): the
        message says which; an existing file is untouched.
    """
    path = Path(os.fspath(path)).expanduser().absolute()
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {str(path.parent)!r} does not exist; create it first.")
    if path.is_dir():
        example = str(path / ("object" + (path.suffix or ".h5ad")))
        raise IsADirectoryError(f"{str(path)!r} is a directory; give the path of a file (e.g. {example!r}).")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; use overwrite=True to replace it.")
    clean_stale_tmp(path.parent)
    if need_bytes is not None:
        free = shutil.disk_usage(path.parent).free
        if need_bytes > free:
            raise _why(OSError(errno.ENOSPC, "No space left on device"), path) from None
    tmp = _tmp_name(path)
    try:
        try:
            yield tmp
        except OSError as e:
            raise _why(e, path) from e
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


def _nbytes(adata) -> int:
    """The bytes of an AnnData's arrays (an upper bound of its uncompressed h5ad, strings aside)."""
    import scipy.sparse as sp

    def size(m):
        if m is None:
            return 0
        if sp.issparse(m):
            return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
        return int(getattr(m, "nbytes", 0))

    n = size(adata.X)
    for store in (adata.layers, adata.obsm, adata.varm, adata.obsp, adata.varp):
        n += sum(size(v) for v in store.values())
    if adata.raw is not None:
        n += size(adata.raw.X)
    n += int(adata.obs.memory_usage(deep=False).sum() + adata.var.memory_usage(deep=False).sum())
    return n


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

    Raises
    ------
    OSError
        Not enough free space (``errno.ENOSPC``): checked before writing, against the size of the
        arrays (uncompressed writes; a compressed write is checked against a quarter of it), since
        h5py crashes the interpreter when the disk fills during a write. Read-only or not
        writable targets: see :func:`atomic_path`.
    """
    path = Path(os.fspath(path)).expanduser().absolute()
    need = _nbytes(adata)
    if kwargs.get("compression"):
        need //= 4
    with atomic_path(path, overwrite=overwrite, need_bytes=need) as tmp:
        adata.write_h5ad(tmp, **kwargs)
    return path
