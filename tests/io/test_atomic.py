"""Atomic file writing (pybridge/io/_atomic.py)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from filehelpers import file_md5

from pybridge.io import atomic_path, write_h5ad_atomic


def test_atomic_path_and_write_h5ad_atomic(tmp_path):
    target = tmp_path / "x.h5ad"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    a = ad.AnnData(X=np.eye(3, dtype=np.float32))
    write_h5ad_atomic(a, target)
    md5 = file_md5(target)
    with pytest.raises(FileExistsError):
        write_h5ad_atomic(a, target)
    with pytest.raises(ValueError, match="disk full"), atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("disk full")
    assert file_md5(target) == md5 and sorted(p.name for p in tmp_path.iterdir()) == ["x.h5ad"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_h5ad_atomic(a, tmp_path / "missing" / "x.h5ad")
