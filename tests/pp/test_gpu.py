"""pybridge.pp on the GPU (cupy): the same numbers as the CPU path.

With a CUDA device visible to cupy, the chain runs with ``device="cuda"`` and is compared with
``device="cpu"`` (itself compared with scanpy and Seurat elsewhere) on kang_ifnb and pbmc_3tech.
Without one, that test is SKIPPED (pytest -rs lists it with the reason "no CUDA device"), never
reported as passed; a separate CPU test checks that ``device="cuda"`` then fails with
resolve_device's clear RuntimeError instead of falling back silently.
"""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from pybridge import pp
from pybridge._device import resolve_device


def _has_gpu() -> bool:
    try:
        return resolve_device("auto", backend="cupy") != "cpu"
    except Exception:  # pragma: no cover
        return False


HAS_GPU = _has_gpu()


def _chain(a, device, n_top):
    b = a.copy()
    pp.run_chain(b, steps=["normalize", "hvg", "scale", "pca"], n_top_genes=n_top, device=device)
    return b


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA device (cupy sees none): the cupy parity checks did not run")
@pytest.mark.parametrize(("name", "n_top"), [("kang_ifnb", 2000), ("pbmc_3tech", 500)])
def test_gpu_chain_matches_cpu(name, n_top, ppdata):
    a = ppdata.load(name)
    cpu, gpu = _chain(a, "cpu", n_top), _chain(a, "cuda", n_top)
    assert gpu.uns["preprocess"]["device"].startswith("cuda")
    # results come back to the host as numpy / scipy
    assert isinstance(gpu.X, sp.spmatrix | sp.sparray) and isinstance(gpu.obsm["X_pca"], np.ndarray)
    assert abs(gpu.X - cpu.X).max() <= 1e-5
    np.testing.assert_allclose(gpu.var["variances_norm"], cpu.var["variances_norm"], rtol=1e-7)
    hv_c, hv_g = cpu.var["highly_variable"].to_numpy(), gpu.var["highly_variable"].to_numpy()
    assert (hv_c & hv_g).sum() / n_top >= 0.99
    if (hv_c == hv_g).all():
        np.testing.assert_allclose(gpu.obsm["X_scaled"], cpu.obsm["X_scaled"], atol=1e-4)
        e1, e2 = gpu.obsm["X_pca"], cpu.obsm["X_pca"]
        cors = [abs(np.corrcoef(e1[:, i], e2[:, i])[0, 1]) for i in range(30)]
        assert min(cors) > 0.9999, cors
        np.testing.assert_allclose(gpu.uns["pca"]["variance"], cpu.uns["pca"]["variance"], rtol=1e-4)
    # the standalone functions and the bare-matrix entry points on the GPU
    b = a.copy()
    pp.normalize_total(b, target_sum=1e4, device="cuda")
    pp.log1p(b, device="cuda")
    assert abs(b.X - cpu.X).max() <= 1e-5
    from pybridge.pp._normalization import log_normalize

    assert abs(log_normalize(a.X, device="cuda") - cpu.X).max() <= 1e-5
    with pytest.raises(ValueError, match="CPU only"):
        pp.pca(ad.AnnData(cpu.obsm["X_scaled"]), svd_solver="arpack", device="cuda")


@pytest.mark.skipif(HAS_GPU, reason="a CUDA device is present: test_gpu_chain_matches_cpu runs instead")
def test_cuda_without_a_gpu_fails_clearly(ppdata):
    """The CUDA path must fail clearly, not fall back silently."""
    a = ppdata.load("pbmc_3tech")[:50].copy()
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        pp.run_chain(a, device="cuda")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        pp.normalize_total(a, device="cuda")
    from pybridge.pp._normalization import log_normalize

    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        log_normalize(a.X, device="cuda")
