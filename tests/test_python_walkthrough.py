"""The Python walkthrough (vignettes/python-walkthrough.py) runs end to end with the quick preset,
as a user would run it, and its headline numbers hold. A walkthrough that breaks fails the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "vignettes" / "python-walkthrough.py"


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    out = tmp_path_factory.mktemp("walkthrough")
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("PYTHONWARNINGS", "ignore")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", "quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, f"walkthrough failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps(summary, indent=1))
    return summary, proc.stdout, out


@pytest.mark.slow
def test_walkthrough_integration_mixes_conditions(walkthrough):
    s, _, out = walkthrough
    pca, scvi = s["integration"]["X_pca"], s["integration"]["X_scVI"]
    assert scvi["ilisi_norm"] > pca["ilisi_norm"] + 0.05
    assert scvi["knn_label_accuracy"] > 0.8
    assert (out / "scvi_kang" / "pybridge_scvi.json").exists()


@pytest.mark.slow
def test_walkthrough_annotation_accuracy(walkthrough):
    s, _, _ = walkthrough
    assert s["annotation"]["n_query"] == 1000
    assert s["annotation"]["accuracy"] > 0.8
    assert s["annotation"]["macro_f1"] > 0.5


@pytest.mark.slow
def test_walkthrough_deconvolution_follows_b_markers(walkthrough):
    s, _, _ = walkthrough
    # measured with the quick preset: 0.34 (cell2location, 500 epochs), 0.38 (NNLS)
    assert s["deconvolution"]["b_marker_spearman_c2l"] > 0.25
    assert s["deconvolution"]["b_marker_spearman_nnls"] > 0.25


@pytest.mark.slow
def test_walkthrough_perturbation(walkthrough):
    s, _, _ = walkthrough
    assert "CD14 Mono" in s["augur_top"]
    for target in ("IFNGR1", "JAK2", "STAT1"):
        assert s["ko_fraction"][target] > 0.3
    assert s["ko_fraction"]["CUL3"] < 0.3
    # deleting ISG15 moves STIM CD14 monocytes towards CTRL more than deleting matched random genes
    assert s["insilico_goal_shift"]["ISG15"] > max(0.0, s["insilico_null_mean"]["ISG15"])


@pytest.mark.slow
def test_walkthrough_rds_round_trip(walkthrough):
    s, stdout, out = walkthrough
    assert s["rds_round_trip"] == {"counts_identical": True, "cell_type_identical": True}
    assert (out / "pbmc_3tech.rds").exists() and (out / "pbmc_3tech.h5ad").exists()
    assert "counts identical after .rds round trip: True" in stdout
