"""pybridge.pl.integration: batch and label panels of one embedding, scores in the titles."""

import matplotlib

matplotlib.use("Agg")
import pytest

import pybridge as pb


def test_integration_panels_carry_the_scores(kang):
    pb.pp.run_chain(kang, steps=("normalize", "hvg", "scale", "pca"))
    scores = pb.tl.integration_scores(kang, embedding="X_pca", batch_key="stim", label_key="seurat_annotations")
    fig = pb.pl.integration(kang, basis="X_pca", batch_key="stim", label_key="seurat_annotations", scores=scores)
    titles = [a.get_title() for a in fig.axes if a.get_title()]
    assert titles[0].startswith("stim (ilisi_norm") and f"{scores['ilisi_norm']:.2f}" in titles[0]
    assert titles[1].startswith("seurat_annotations (clisi_norm")
    with pytest.raises(KeyError, match="batch_key 'donor' is not in obs"):
        pb.pl.integration(kang, basis="X_pca", batch_key="donor", label_key="seurat_annotations")
