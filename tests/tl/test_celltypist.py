"""pybridge.tl.annotate_celltypist on real data (pbmc_3tech: train 10x 3' v2, predict 5')."""

import anndata as ad
import pytest
from sklearn.metrics import accuracy_score

from pybridge.tl import annotate, annotate_celltypist

from conftest import shared_path


@pytest.mark.slow
def test_celltypist_pbmc_and_saved_model(tmp_path):
    a = ad.read_h5ad(shared_path("pbmc_3tech.h5ad"))
    ref, query = a[a.obs["donor"] == "3pv2"].copy(), a[a.obs["donor"] == "5p"].copy()
    q = query.copy()
    annotate(q, ref, labels_key="cell_type", method="celltypist", model_path=tmp_path / "ct")
    y = q.obs["cell_type"].astype(str)
    acc = accuracy_score(y, q.obs["predicted_celltype"].astype(str))
    assert acc >= 0.90, acc  # measured 0.95
    assert (tmp_path / "ct" / "celltypist_model.pkl").exists()
    q2 = query.copy()
    annotate_celltypist(q2, tmp_path / "ct")
    assert list(q2.obs["predicted_celltype"]) == list(q.obs["predicted_celltype"])
    assert q2.uns["predicted_celltype"]["loaded_from"] == str(tmp_path / "ct" / "celltypist_model.pkl")
