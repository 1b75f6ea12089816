"""Shared fixtures: the real datasets in ../shared/data (beside the checkout, also in CI)."""

import os
from pathlib import Path

import anndata as ad
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYBRIDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(name: str) -> Path:
    p = SHARED / name
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: the tests need ../shared/data beside the checkout "
                                "(or PYBRIDGE_SHARED_DATA pointing at it).")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED


@pytest.fixture
def kang():
    return ad.read_h5ad(shared_path("kang_ifnb.h5ad"))


@pytest.fixture
def pbmc3():
    return ad.read_h5ad(shared_path("pbmc_3tech.h5ad"))
