"""pybridge.tl.annotate (the dispatcher R's AnnotateCells calls) and what every method shares
(pybridge.tl._label_transfer): reference labels, bad inputs, clear errors before any work."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pybridge.tl import annotate

from conftest import shared_path

METHODS = ("tosica", "scanvi", "celltypist")


@pytest.fixture(scope="module")
def pbmc_split():
    a = ad.read_h5ad(shared_path("pbmc_3tech.h5ad"))
    return a[a.obs["donor"] == "3pv2"].copy(), a[a.obs["donor"] == "5p"].copy()


def test_too_few_shared_genes_is_a_clear_error(pbmc_split):
    ref, query = pbmc_split
    small = query[:, :50].copy()
    before = small.obs.copy()
    for method in METHODS:
        with pytest.raises(ValueError, match=r"share only 50 genes.*query has 50, reference has 1767.*Ensembl"):
            annotate(small, ref, labels_key="cell_type", method=method)
    pd.testing.assert_frame_equal(small.obs, before)
    assert "predicted_celltype" not in small.uns


def test_bad_inputs(pbmc_split):
    ref, query = pbmc_split
    with pytest.raises(KeyError, match="celltype.*Columns that exist: donor"):
        annotate(query.copy(), ref, labels_key="celltype")
    lognorm = ref.copy()
    lognorm.X = sp.csr_matrix(np.log1p(lognorm.X.toarray()))
    with pytest.raises(ValueError, match="non-integer.*reference"):
        annotate(query.copy(), lognorm, labels_key="cell_type", max_epochs=1)
    with pytest.raises(ValueError, match="method must be one of"):
        annotate(query.copy(), ref, labels_key="cell_type", method="svm")
    with pytest.raises(TypeError, match="unknown option"):
        annotate(query.copy(), ref, labels_key="cell_type", n_latnet=3)
    with pytest.raises(TypeError, match="unknown option.*Options for celltypist: .*max_iter"):
        annotate(query.copy(), ref, labels_key="cell_type", method="celltypist", n_latent=3)
    with pytest.raises(ValueError, match="max_epochs is not used by method='celltypist'"):
        annotate(query.copy(), ref, labels_key="cell_type", method="celltypist", max_epochs=3)
    with pytest.raises(ValueError, match="max_epochs must be at least 1, got 0"):
        annotate(query.copy(), ref, labels_key="cell_type", max_epochs=0)
    with pytest.raises(ValueError, match="unknown_threshold must be at most 1"):
        annotate(query.copy(), ref, labels_key="cell_type", unknown_threshold=2)
    with pytest.raises(ValueError, match="give a reference AnnData"):
        annotate(query.copy(), None)


@pytest.mark.parametrize("method", METHODS)
def test_one_label_reference_is_a_clear_error_for_every_method(pbmc_split, method):
    """Issue 15: CellTypist crashed with '_ConstantPredictor' has no 'coef_'; every method now
    stops before training with what is wrong and how to fix it."""
    ref, query = pbmc_split
    one = ref[ref.obs["cell_type"] == "B"].copy()
    q = query.copy()
    with pytest.raises(ValueError, match=r"1 cell type in labels_key 'cell_type' \(only 'B'\).*at least two"):
        annotate(q, one, labels_key="cell_type", method=method)
    assert "predicted_celltype" not in q.obs
    na = ref.copy()
    na.obs["cell_type"] = pd.Categorical([np.nan] * na.n_obs, categories=["B"])
    with pytest.raises(ValueError, match=r"0 cell type.*\(none\)"):
        annotate(q, na, labels_key="cell_type", method=method)


def test_na_labels_dropped_and_small_types_named(pbmc_split, caplog):
    ref, query = pbmc_split
    r = ref.copy()
    lab = r.obs["cell_type"].astype(object).to_numpy()
    lab[:25] = None
    r.obs["cell_type"] = pd.Categorical(lab)
    q = query.copy()
    with caplog.at_level("INFO", logger="pybridge"), \
            pytest.warns(UserWarning, match=r"fewer than 10 cells: .*MK \(\d\)"):
        annotate(q, r, labels_key="cell_type", method="celltypist")
    assert "leaving out 25 of 480 reference cells with no cell_type (NA)" in caplog.text
    assert q.uns["predicted_celltype"]["train"]["n_cells"] == 480 - 25


# ---------------------------------------------------------------- across studies (issue 16)
def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_annotate.py"
    spec = importlib.util.spec_from_file_location("bench_annotate", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _singler_available() -> bool:
    import shutil
    import subprocess

    if shutil.which("Rscript") is None:
        return False
    r = subprocess.run(["Rscript", "-e", "quit(status = !requireNamespace('SingleR', quietly = TRUE))"],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["pbmc2kang", "kang2pbmc"])
def test_default_beats_logistic_regression_and_singler_across_studies(pair):
    """pbmc_3tech <-> kang_ifnb (another study, platform and gene panel; 1,262 shared genes):
    the default annotation against logistic regression and SingleR, computed here on the same
    cells. Measured (2 cores, benchmarks/bench_annotate.py, tag v4), fine / broad:
    pbmc2kang tosica 0.881 / 0.940, logistic regression 0.770 / 0.938, SingleR 0.661 / 0.920;
    kang2pbmc tosica 0.871 / 0.975, logistic regression 0.777 / 0.896, SingleR 0.755 / 0.880.
    On pbmc2kang the broad accuracy only ties logistic regression (not above it by a margin).
    input_scaling="auto" sees the shift (0.109 / 0.085, within a study 0.00) and uses the
    query's own composition-balanced statistics."""
    bench = _bench()
    ref, query, key, truth, broad, files = bench.load_pair(pair)
    info = {}
    argmax, called, _ = bench.run_pybridge("tosica", ref, query, key, {}, info=info)
    assert info["input_scaling"]["applied"] == "balanced" and info["input_scaling"]["shift"] > 0.07, info
    ours = bench.score(truth, argmax, broad)
    lr = bench.score(truth, bench.run_logreg(ref, query, key, {})[0], broad)
    print(pair, "pybridge", ours, "logreg", lr)
    assert ours["fine"] >= 0.85 and ours["broad"] >= 0.93
    assert ours["fine"] > lr["fine"] + 0.05
    assert ours["broad"] > (lr["broad"] + 0.04 if pair == "kang2pbmc" else lr["broad"] - 0.01)
    # the calibrated "Unknown" across studies, every type in the reference: few cells called
    # "Unknown" (per-class thresholds, tag perclass: pbmc2kang 5.9%, kang2pbmc 2.6%)
    known = np.array([t is not None for t in truth])
    assert (np.asarray(called)[known] == "Unknown").mean() <= 0.07
    if not _singler_available():
        pytest.skip("SingleR (R) is not installed: the SingleR floor is not checked (Debian: r-bioc-singler)")
    singler = bench.score(truth, bench.run_r(["singler"], ref, query, key, files)["singler"][0], broad)
    print(pair, "SingleR", singler)
    assert ours["fine"] > singler["fine"] + 0.05 and ours["broad"] > singler["broad"]


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["pbmc2kang", "kang2pbmc"])
def test_calibrated_unknown_across_studies_catches_b_cells_left_out(pair):
    """B cells (Kang: B and B Activated) left out of the reference of another study: >= 70% of
    the query's B cells "Unknown", <= 5% of cells of types the reference has (issue 16 goal).
    Measured (2 cores, bench_annotate.py --leave-out B, tag perclass, seed 0): pbmc2kang
    82.7% / 4.3% (pooled threshold before: 94.0% / 7.1%); kang2pbmc 71.5% / 2.3% (69.2% / 2.2%)."""
    bench = _bench()
    ref, query, key, truth, broad, files = bench.load_pair(pair)
    types = bench.LEFT_OUT["B"]
    ref = ref[~ref.obs[key].astype(str).isin(types)].copy()
    info = {}
    _, called, _ = bench.run_pybridge("tosica", ref, query, key, {}, info=info)
    t = np.array([x if x is not None else "" for x in truth], dtype=object).astype(str)
    novel, u = np.isin(t, types), np.asarray(called) == "Unknown"
    known = (t != "") & ~novel
    print(pair, "B Unknown", u[novel].mean(), "known types Unknown", u[known].mean())
    assert u[novel].mean() >= 0.70 and u[known].mean() <= 0.05
    assert info["unknown_rule"]["per_class"] and "B" not in info["unknown_rule"]["thresholds"]


@pytest.mark.slow
def test_calibrated_unknown_catches_a_type_the_reference_lacks(pbmc_split):
    """B cells left out of the pbmc 3' v2 reference: most of the 5' query's B cells become
    "Unknown", while cells of types the reference has rarely do (threshold from held-out
    reference cells, not a fixed probability)."""
    ref, query = pbmc_split
    q = query.copy()
    annotate(q, ref[ref.obs["cell_type"] != "B"].copy(), labels_key="cell_type", device="cpu")
    y = q.obs["cell_type"].astype(str).to_numpy()
    called = q.obs["predicted_celltype"].astype(str).to_numpy()
    b, known = y == "B", (y != "B") & (y != "HSC")
    # per-class thresholds (tag perclass): B 0.873, known types 0.039 (pooled threshold before:
    # 0.887 / 0.014; seed 1: 0.95); Kang CTRL -> STIM with B out: 0.700 / 0.027 (before 0.18 / 0.026)
    assert (called[b] == "Unknown").mean() >= 0.70
    assert (called[known] == "Unknown").mean() <= 0.05
    info = q.uns["predicted_celltype"]
    rule = info["unknown_rule"]
    assert rule["rule"] == "similarity" and rule["quantile"] == 0.05 and rule["per_class"]
    probs = q.obsm["predicted_celltype_probabilities"]
    argmax = probs.columns.to_numpy()[probs.to_numpy().argmax(axis=1)]
    assert set(rule["thresholds"]) == set(probs.columns) and "B" not in rule["thresholds"]
    assert info["unknown_threshold"] == rule["threshold"] == min(rule["thresholds"].values())
    assert all(rule["thresholds"][c] <= rule["reference_thresholds"][c] for c in rule["thresholds"])
    sim = q.obs["predicted_celltype_similarity"].to_numpy()
    thr = np.array([rule["thresholds"][c] for c in argmax])
    assert np.all((called == "Unknown") == (sim < thr))
    # accuracy both ways on the known types: argmax, and "Unknown" counted as wrong
    assert (argmax[known] == y[known]).mean() >= 0.90 and (called[known] == y[known]).mean() >= 0.88
    # a number keeps the probability rule
    q2 = query.copy()
    annotate(q2, ref, labels_key="cell_type", method="celltypist", unknown_threshold=0.0)
    assert (q2.obs["predicted_celltype"] == "Unknown").sum() == 0
    assert q2.uns["predicted_celltype"]["unknown_rule"] == {"rule": "probability", "threshold": 0.0}


@pytest.mark.slow
def test_model_path_of_another_reference_is_an_error(pbmc_split, tmp_path):
    ref, query = pbmc_split
    for method in ("tosica", "celltypist"):
        path = tmp_path / method
        annotate(query.copy(), ref, labels_key="cell_type", method=method, model_path=path, max_epochs=1) \
            if method == "tosica" else annotate(query.copy(), ref, labels_key="cell_type", method=method,
                                                model_path=path)
        q = query.copy()  # same reference: the saved model is reused, not retrained
        annotate(q, ref, labels_key="cell_type", method=method, model_path=path)
        assert "loaded_from" in q.uns["predicted_celltype"]
        other = ref[: ref.n_obs - 20].copy()
        with pytest.raises(ValueError, match="another reference or other labels"):
            annotate(query.copy(), other, labels_key="cell_type", method=method, model_path=path)
        relabelled = ref.copy()
        relabelled.obs["broad"] = relabelled.obs["cell_type_broad"]
        with pytest.raises(ValueError, match="another reference or other labels"):
            annotate(query.copy(), relabelled, labels_key="broad", method=method, model_path=path)
