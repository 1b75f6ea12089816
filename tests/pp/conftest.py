"""Fixtures of the pp tests: real data (kang_ifnb, pbmc_3tech) and one run of the chain + scanpy's.

Reference: scanpy 1.11 ``highly_variable_genes(flavor="seurat_v3")`` on counts,
``normalize_total(target_sum=1e4)``, ``log1p``, ``scale(max_value=10)`` on the variable genes,
``pca(svd_solver="arpack", n_comps=50)``. Parity with Seurat itself is tested in R
(r-package/tests/testthat/test-preprocess.R).
"""

import warnings

import anndata as ad
import pytest
import scanpy as sc
import scipy.sparse as sp
from conftest import shared_path

from pybridge import pp

DATASETS = {"kang_ifnb": ("stim", 2000), "pbmc_3tech": ("donor", 500)}


def load(name):
    a = ad.read_h5ad(shared_path(f"{name}.h5ad"))
    a.X = sp.csr_matrix(a.X)
    return a


def read_only(a):
    """Make X read-only, as the zero-copy view of R memory that RunPreprocess hands the engine."""
    for arr in (a.X.data, a.X.indices, a.X.indptr):
        arr.flags.writeable = False
    return a


def scanpy_reference(a, n_top, hv_mask):
    """scanpy's chain; scaling and PCA on the genes in ``hv_mask`` (the same input as ours)."""
    ref = a.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(ref, flavor="seurat_v3", n_top_genes=n_top)
        sc.pp.normalize_total(ref, target_sum=1e4)
        sc.pp.log1p(ref)
        sub = ref[:, hv_mask].copy()
        sc.pp.scale(sub, max_value=10)
        sc.pp.pca(sub, n_comps=50, svd_solver="arpack", mask_var=None)
    return ref, sub


@pytest.fixture(scope="session")
def pbmc3_counts():
    """pbmc_3tech counts (CSR float32), read once; tests copy it before changing it."""
    return load("pbmc_3tech")


@pytest.fixture(scope="session")
def pbmc3_logged(pbmc3_counts):
    """pbmc_3tech log-normalised in X (normalize_total 1e4 + log1p), counts not kept."""
    a = pbmc3_counts.copy()
    pp.normalize_total(a, target_sum=1e4, device="cpu")
    pp.log1p(a, device="cpu")
    return a


_CHAINS = {}


@pytest.fixture(params=list(DATASETS))
def chain(request):
    """run_chain (normalize, hvg, scale, pca) on read-only counts, and scanpy's chain, once per dataset."""
    name = request.param
    if name not in _CHAINS:
        _, n_top = DATASETS[name]
        a = load(name)
        counts = a.X.copy()
        ours = read_only(a.copy())
        pp.run_chain(ours, steps=["normalize", "hvg", "scale", "pca"], n_top_genes=n_top, device="cpu")
        hv = ours.var["highly_variable"].to_numpy()
        ref, sub = scanpy_reference(a, n_top, hv)
        _CHAINS[name] = dict(name=name, n_top=n_top, raw=a, counts=counts, ours=ours, ref=ref, sub=sub, hv=hv)
    return _CHAINS[name]


@pytest.fixture(scope="session")
def ppdata():
    """The helpers above for the test modules (``ppdata.load(name)``, ``ppdata.read_only(a)``)."""
    from types import SimpleNamespace

    return SimpleNamespace(load=load, read_only=read_only, datasets=DATASETS)
