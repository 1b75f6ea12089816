"""pybridge's driver of cell2location's mapping model (backend="pybridge") against the package's own
training and posterior sampling, on real lymph-node data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from deconv_truth import lymph_data

from pybridge.tl import _cell2location_fast as fast
from pybridge.tl import cell2location
from pybridge.tl._nnls import mean_signatures


@pytest.mark.parametrize("shape", [(7, 3), (1000, 2, 5), (200, 4)])
@pytest.mark.parametrize("q", [0.05, 0.5, 0.95])
def test_quantile_is_numpys(shape, q):
    import torch

    x = np.random.default_rng(0).gamma(2.0, size=shape).astype(np.float32)
    got = fast._quantile(torch.from_numpy(x), q).numpy()
    np.testing.assert_allclose(got, np.quantile(x, q, axis=0), rtol=1e-6)


@pytest.fixture(scope="module")
def small_problem():
    """300 Visium spots on the 558 genes the panel shares with the reference; signatures = mean
    counts per cell type (the mapping does not care where signatures come from)."""
    ref, vis, genes = lymph_data()
    lab = ref.obs["cell_type"].astype("category")
    import scipy.sparse as sp

    sig = mean_signatures(sp.csr_matrix(ref[:, genes].X, dtype=np.float32), lab, genes)
    return vis[:300].copy(), sig


def _model(vis, sig):
    from pybridge.tl._cell2location import _mapping_model
    from pybridge.tl._deconv_common import as_csr_float32

    return _mapping_model(as_csr_float32(vis[:, list(sig.index)].X), vis.obs_names.astype(str), list(sig.index), sig,
                          spatial_obs=vis.obs, spatial_batch_key=None, n_cells_per_location=30,
                          detection_alpha=20, model_kwargs=None)


@pytest.mark.slow
def test_vectorised_w_sf_draws_match_the_packages_sample_posterior(small_problem):
    """Same trained model: our one-call draws of w_sf give the package's mean / q05 / q95 up to
    sampling noise (the package re-traces model and guide for every one of its draws)."""
    import pyro

    vis, sig = small_problem
    pyro.set_rng_seed(0)
    mod = _model(vis, sig[sig.sum(1) > 0])
    tkw = {"accelerator": "cpu", "device": "auto"}
    fast.train(mod, max_epochs=200, lr=0.02, tkw=tkw, verbose=False)
    ours = fast.w_sf_summaries(mod, num_samples=400, tkw=tkw, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pkg = mod.sample_posterior(num_samples=400, batch_size=vis.n_obs, return_sites=["w_sf"],
                                   show_progress=False, accelerator="cpu", device="auto")
    # exact values of the guide's w_sf (AutoNormal: exp of a normal per spot and type)
    import torch

    with torch.no_grad():
        loc, scale = (t.cpu().numpy().astype(np.float64) for t in mod.module.guide._get_loc_and_scale("w_sf"))
    exact = {"mean": np.exp(loc + scale ** 2 / 2), "q05": np.exp(loc - 1.6448536 * scale),
             "q95": np.exp(loc + 1.6448536 * scale)}
    for q, name in (("mean", "means"), ("q05", "q05"), ("q95", "q95")):
        a, b = ours[q].ravel(), np.asarray(pkg[f"post_sample_{name}"]["w_sf"]).ravel()
        e = exact[q].ravel()
        err_ours = np.median(np.abs(a - e) / e)
        err_pkg = np.median(np.abs(b - e) / e)
        r = np.corrcoef(a, b)[0, 1]
        print(f"w_sf {q}: r(ours, package) = {r:.5f}; median relative error vs exact: ours {err_ours:.4f}, "
              f"package {err_pkg:.4f}")
        assert r > 0.99
        # the same estimator: sampling noise of the same size (400 draws each)
        assert err_ours < 1.3 * err_pkg + 1e-3 and err_ours < 0.03
    assert (ours["q05"] <= ours["mean"]).all() and (ours["mean"] <= ours["q95"]).all()


@pytest.mark.slow
def test_pybridge_backend_trains_like_the_package(small_problem):
    """Both backends from the same initialisation: the loss curves agree (the same model, guide and
    Adam; only the random draws differ) and so do the q05 abundances."""
    vis, sig = small_problem
    out = {}
    for backend, seed in (("cell2location", 0), ("cell2location", 1), ("pybridge", 0)):
        v = vis.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = cell2location(v, signatures=sig, max_epochs=600, lr=0.02, num_samples=200, device="cpu",
                                backend=backend, random_state=seed, verbose=False)
        out[backend, seed] = (v.obsm["cell2location_q05"].to_numpy().ravel(), res)
    h0, h1 = (out[k][1]["history"]["elbo_train"] for k in (("cell2location", 0), ("pybridge", 0)))
    assert len(h0) == len(h1) == 600
    # same starting point; late losses within 1% of each other
    assert abs(h1[0] - h0[0]) / h0[0] < 0.01
    assert abs(np.mean(h1[-50:]) - np.mean(h0[-50:])) / np.mean(h0[-50:]) < 0.01
    r = np.corrcoef(out["pybridge", 0][0], out["cell2location", 0][0])[0, 1]
    floor = np.corrcoef(out["cell2location", 1][0], out["cell2location", 0][0])[0, 1]
    print(f"q05 r (600 epochs, lr 0.02): pybridge vs package {r:.6f}; package vs package (other seed) {floor:.6f}")
    assert r > floor - 0.01  # as close to the package as the package is to itself
    out = {"pybridge": out["pybridge", 0], "cell2location": out["cell2location", 0]}
    assert out["pybridge"][1]["params"]["backend"] == "pybridge"
    assert out["cell2location"][1]["params"]["backend"] == "cell2location"
    for k in ("training", "sampling", "training_per_epoch_steady"):
        assert out["pybridge"][1]["seconds"][k] > 0


def test_backend_checked_and_minibatches_use_the_package(small_problem, monkeypatch):
    vis, sig = small_problem
    with pytest.raises(ValueError, match="backend must be 'pybridge' or 'cell2location'"):
        cell2location(vis.copy(), signatures=sig, max_epochs=5, backend="jax", device="cpu")
    called = {}

    def fake_train(*a, **k):
        called["fast"] = True
        raise RuntimeError("stop")

    monkeypatch.setattr(fast, "train", fake_train)
    with pytest.raises(RuntimeError, match="stop"):
        cell2location(vis.copy(), signatures=sig, max_epochs=5, device="cpu", verbose=False)
    assert called == {"fast": True}


def test_guide_other_than_autonormal_is_refused():
    class Fake:
        class module:
            guide = object()

    with pytest.raises(TypeError, match="AutoNormal"):
        fast.w_sf_summaries(Fake, num_samples=10, tkw={"accelerator": "cpu"})

