"""pybridge.pl.perturbation_rank on a (small) real Augur run on Kang."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

import pybridge as pb


def test_rank_bars_follow_the_auc_table(kang):
    pb.tl.score_perturbation(kang, condition_key="stim", control="CTRL", cell_type_key="seurat_annotations",
                             method="augur", n_subsamples=2, n_estimators=20, random_state=0)
    tab = kang.uns["augur"]["table"].dropna(subset=["auc"]).sort_values("auc", ascending=False)
    fig = pb.pl.perturbation_rank(kang)
    ax = fig.axes[0]
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(sorted(widths, reverse=True), tab["auc"].to_numpy())
    # the top bar (largest y) is the highest AUC, and each label sits on its own bar
    top = max(ax.patches, key=lambda p: p.get_y())
    assert top.get_width() == pytest.approx(tab["auc"].iloc[0])
    ypos = {t.get_text(): t.get_position()[1] for t in ax.get_yticklabels()}
    assert max(ypos, key=ypos.get) == str(tab["cell_type"].iloc[0])
    with pytest.raises(KeyError, match="no perturbation result"):
        pb.pl.perturbation_rank(kang, key="mixscape")
