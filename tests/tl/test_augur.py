"""tl.augur on real data (Kang IFN-beta): every type reported, monocytes respond most; counts
checks; Augur's loess variable-gene selection against the R method."""

import anndata as ad
import numpy as np
import pytest
from conftest import shared_path

from pybridge import tl


@pytest.fixture(scope="module")
def kang_augur():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    x0 = a.X.copy()
    # fewer subsamples / trees than Augur's defaults (50 / 100) to keep the test short
    table = tl.augur(a, "stim", "CTRL", cell_type_key="seurat_annotations", n_subsamples=8, n_estimators=50,
                     random_state=0)
    return a, x0, table


@pytest.fixture
def kang_small():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    return a[a.obs["seurat_annotations"].isin(["CD14 Mono", "B"])].copy()


def test_augur_kang_every_type_reported_cd14_top3(kang_augur):
    a, x0, table = kang_augur
    print("\nAugur AUC ranking (Kang IFN-beta):\n", table[["cell_type", "auc", "rank", "n_control",
                                                            "n_perturbed", "status"]].to_string())
    types = set(a.obs["seurat_annotations"].astype(str))
    assert set(table["cell_type"]) == types and len(table) == 13
    counts = a.obs.groupby(["seurat_annotations", "stim"], observed=False).size().unstack()
    for _, r in table.iterrows():
        n_c, n_s = counts.loc[r.cell_type, "CTRL"], counts.loc[r.cell_type, "STIM"]
        assert (r.n_control, r.n_perturbed) == (n_c, n_s)
        if min(n_c, n_s) >= 20:
            assert r.status == "ok" and 0.5 <= r.auc <= 1.0
        else:  # Eryth (0 CTRL), pDC (4), Mk (13 STIM), B Activated (19 CTRL) cannot be subsampled
            assert np.isnan(r.auc) and r.status.startswith("skipped: fewer than 20 cells per condition")
    scored = table.dropna(subset=["auc"])
    assert len(scored) == 9
    top3 = list(scored.sort_values("auc", ascending=False)["cell_type"][:3])
    assert "CD14 Mono" in top3, top3
    # monocytes respond more than lymphocytes (known for IFN-beta)
    auc = dict(zip(table.cell_type, table.auc, strict=True))
    assert auc["CD14 Mono"] > max(auc["CD4 Naive T"], auc["CD4 Memory T"], auc["NK"])


def test_augur_writes_obs_uns_and_leaves_x(kang_augur):
    a, x0, table = kang_augur
    assert (a.X != x0).nnz == 0  # counts untouched
    per_cell = a.obs["augur_auc"]
    auc = dict(zip(table.cell_type, table.auc, strict=True))
    expect = a.obs["seurat_annotations"].astype(str).map(auc)
    np.testing.assert_allclose(per_cell.to_numpy(), expect.to_numpy(), equal_nan=True)
    p = a.uns["augur"]["params"]
    assert p["method"] == "augur" and p["perturbed"] == "STIM" and p["n_subsamples"] == 8
    assert a.uns["augur"]["table"].equals(table)


def test_augur_skips_small_types_without_crash(kang_small):
    b = kang_small[~((kang_small.obs["seurat_annotations"] == "B") & (kang_small.obs["stim"] == "CTRL"))
                   | (np.arange(kang_small.n_obs) % 10 == 0)].copy()
    t = tl.augur(b, "stim", "CTRL", cell_type_key="seurat_annotations", n_subsamples=2, n_estimators=10)
    row = t.set_index("cell_type").loc["B"]
    assert np.isnan(row.auc) and "skipped: fewer than 20 cells per condition" in row.status
    assert t.set_index("cell_type").loc["CD14 Mono", "status"] == "ok"
    assert np.isnan(b.obs.loc[b.obs["seurat_annotations"] == "B", "augur_auc"]).all()
