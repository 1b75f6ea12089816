"""pybridge.pl.confusion / prediction on the real Kang labels."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

import pybridge as pb
from pybridge.pl._annotation import confusion_table


def test_confusion_matches_sklearn(kang):
    truth = kang.obs["seurat_annotations"].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    pred = truth.copy()
    flip = rng.random(len(pred)) < 0.2
    pred[flip] = rng.permutation(pred[flip])
    kang.obs["predicted_celltype"] = pred
    fig = pb.pl.confusion(kang, label_key="seurat_annotations")
    tab = fig.confusion_table
    labels = sorted(set(truth) | set(pred))
    cm = confusion_matrix(truth, pred, labels=labels, normalize="true")
    expect = cm[np.ix_([labels.index(r) for r in tab.index], [labels.index(c) for c in tab.columns])]
    np.testing.assert_allclose(tab.to_numpy(), expect)
    np.testing.assert_allclose(tab.sum(1), 1.0)
    counts = confusion_table(truth, pred, normalize=False)
    assert counts.to_numpy().sum() == len(truth)


def test_prediction_panels_and_errors(kang):
    kang.obsm["X_emb"] = np.random.default_rng(1).normal(size=(kang.n_obs, 2))
    kang.obs["predicted_celltype"] = kang.obs["seurat_annotations"]
    kang.obs["predicted_celltype_probability"] = 0.9
    fig = pb.pl.prediction(kang, basis="X_emb")
    assert len([a for a in fig.axes if a.get_title()]) >= 2
    with pytest.raises(KeyError, match="Keys that exist: X_emb"):
        pb.pl.prediction(kang, basis="X_umap")
    with pytest.raises(ValueError, match="2-D embedding"):
        kang.obsm["X_1d"] = np.zeros((kang.n_obs, 1))
        pb.pl.prediction(kang, basis="X_1d")
