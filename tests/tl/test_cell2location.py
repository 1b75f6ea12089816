"""pybridge.tl.cell2location on real lymph-node data: ground truth, reuse of signatures and models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from deconv_truth import lymph_data, score, truth_data

from pybridge.tl import cell2location

# Floors measured on this data (see benchmarks/bench_deconvolve.py for the figures), with margin.
C2L_R_FLOOR, C2L_RMSE_CEIL = 0.85, 0.11
# Short training for CI on CPU (the recommended 30,000 epochs take hours there).
C2L_EPOCHS, C2L_LR, REF_EPOCHS = 500, 0.02, 250


@pytest.fixture(scope="module")
def lymph():
    return lymph_data()


@pytest.fixture(scope="module")
def truth_pack():
    return truth_data(lymph_data()[0])


@pytest.mark.slow
def test_cell2location_ground_truth_and_reuse(truth_pack, tmp_path):
    spatial, half, truth, ncells = truth_pack
    spatial, half = spatial.copy(), half.copy()
    hx = half.X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell2location(spatial, half, labels_key="cell_type", n_cells_per_location=float(ncells.mean()),
                   reference_max_epochs=REF_EPOCHS, max_epochs=C2L_EPOCHS, lr=C2L_LR, reference_genes="shared",
                   model_kwargs={"A_factors_per_location": 3, "B_groups_per_location": 3},
                   num_samples=100, save_reference_model=str(tmp_path / "ref"), device="cpu")
    r, rmse = score(spatial.obsm["cell2location_proportions"], truth)
    print(f"cell2location ground truth: r = {r:.3f}, RMSE = {rmse:.3f} ({C2L_EPOCHS} epochs)")
    assert r >= C2L_R_FLOOR and rmse <= C2L_RMSE_CEIL
    mean, q05, q95 = (spatial.obsm[f"cell2location_{q}"] for q in ("mean", "q05", "q95"))
    assert (q05.to_numpy() >= 0).all()
    assert (q05.to_numpy() <= mean.to_numpy() + 1e-6).all() and (mean.to_numpy() <= q95.to_numpy() + 1e-6).all()
    totals = mean.sum(1)
    assert 0.5 * ncells.mean() < totals.mean() < 1.5 * ncells.mean()
    assert np.corrcoef(totals, ncells)[0, 1] > 0.5  # more cells -> more estimated cells
    u = spatial.uns["cell2location"]
    assert u["params"]["max_epochs"] == C2L_EPOCHS and u["params"]["device"] == "cpu"
    assert len(u["history"]["elbo_train"]) == C2L_EPOCHS
    assert u["history"]["elbo_train"][-1] < u["history"]["elbo_train"][0]
    assert 0 < u["n_genes"] <= len(truth_pack[0].var_names)
    sig = half.varm["cell2location_signatures"]
    assert list(sig.columns) == list(truth.columns) and (half.X != hx).nnz == 0
    assert sig.dropna().index.tolist() == list(u["genes"])  # reference_genes="shared"
    # reuse: a saved RegressionModel gives the same signatures (fresh posterior draws)
    again = truth_pack[0].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell2location(again, reference_model_path=str(tmp_path / "ref"), max_epochs=20, num_samples=100,
                   device="cpu")
    s1 = u["signatures"]
    s2 = again.uns["cell2location"]["signatures"].loc[s1.index, s1.columns]
    assert np.corrcoef(np.log1p(s1.to_numpy().ravel()), np.log1p(s2.to_numpy().ravel()))[0, 1] > 0.99
    assert again.uns["cell2location"]["params"]["signatures_source"] == "reference_model"


@pytest.mark.slow
def test_cell2location_reference_on_all_genes_maps_another_panel(lymph, truth_pack):
    """reference_genes="all" (the default): signatures for every gene passing the filter, so
    a reference fitted with one spatial panel maps another panel without refitting."""
    vis = lymph[1]
    spatial, half = truth_pack[0].copy(), truth_pack[1].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = cell2location(spatial, half, labels_key="cell_type", reference_max_epochs=30, max_epochs=30,
                         num_samples=20, device="cpu")
    sig = out["signatures"]
    assert len(sig) == out["n_reference_genes_after_filter"] > 3 * out["n_genes"]
    assert half.varm["cell2location_signatures"].notna().all(axis=1).sum() == len(sig)
    assert (sig.to_numpy() >= 0).all()
    v = vis.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cell2location(v, signatures=sig, max_epochs=30, num_samples=20, device="cpu")
    used = v.uns["cell2location"]["genes"]
    assert len(set(used) - set(spatial.var_names)) > 100  # genes the first panel did not have
    assert v.obsm["cell2location_mean"].shape == (v.n_obs, sig.shape[1])


def test_progress_lines_when_verbose_and_silence_when_not(lymph, capfd):
    """A verbose run reports its epochs (i/n, elapsed, ETA) and what it maps; verbose=False prints
    nothing (no Lightning banners either). Five epochs: the check, not the result, matters here."""
    from pybridge.tl import nnls

    ref, vis, _ = lymph
    v0 = vis[:200].copy()
    sig = nnls(v0.copy(), ref, labels_key="cell_type")["signatures"]
    capfd.readouterr()
    cell2location(v0.copy(), signatures=sig, max_epochs=5, num_samples=10, device="cpu", verbose=True)
    out = "".join(capfd.readouterr())
    assert "cell2location: mapping 200 spots" in out and "cell2location mapping, epoch: 1/5 (20%)" in out
    cell2location(v0.copy(), signatures=sig, max_epochs=5, num_samples=10, device="cpu", verbose=False)
    out = "".join(capfd.readouterr())
    assert "cell2location" not in out and "GPU available" not in out and "Epoch" not in out
    # the package's own loop shows Lightning's bar when verbose
    cell2location(v0.copy(), signatures=sig, max_epochs=3, num_samples=10, device="cpu", verbose=True,
                  backend="cell2location")
    assert "Epoch 3/3" in "".join(capfd.readouterr())
