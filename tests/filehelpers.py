"""Helpers of the file tests (tests/io/test_seurat_rds.py, tests/io/test_atomic.py, tests/test_cli.py):
the shared datasets and comparisons of files and AnnData objects."""

from __future__ import annotations

import hashlib

import scipy.sparse as sp

RDS = ["kang_ifnb_processed", "pbmc_3tech", "lymphnode_reference", "lymphnode_visium", "papalexi_eccite"]
PAIRS = ["pbmc_3tech", "lymphnode_reference", "lymphnode_visium", "papalexi_eccite"]  # same data as .h5ad too


def file_md5(p) -> str:
    """MD5 of a file's bytes (to show it is untouched)."""
    return hashlib.md5(open(p, "rb").read()).hexdigest()


def same_counts(a, b):
    """X of two AnnData objects equal (as CSR), cells and features in the same order."""
    xa, xb = sp.csr_matrix(a.X), sp.csr_matrix(b.X)
    assert xa.shape == xb.shape
    assert (xa != xb).nnz == 0


def seurat_names(names) -> list[str]:
    """Feature names as Seurat holds them ('_' -> '-')."""
    return [n.replace("_", "-") for n in names]
