"""Perturbation scoring on real data: Augur (Kang IFN-beta), Mixscape (Papalexi ECCITE-seq),
in-silico deletion (Kang, scVI encoder and the TOSICA encoder)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from pybridge import tl
from pybridge.tl._perturbation import _lognorm

ISGS = ["ISG15", "IFI6", "IFIT1", "MX1"]
IFNG_TARGETS = ["IFNGR1", "IFNGR2", "JAK2", "STAT1"]


# --------------------------------------------------------------------------------- Augur
@pytest.fixture(scope="module")
def kang_augur():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    x0 = a.X.copy()
    # fewer subsamples / trees than Augur's defaults (50 / 100) to keep the test short
    table = tl.score_perturbation(a, condition_key="stim", control="CTRL", cell_type_key="seurat_annotations",
                                  n_subsamples=8, n_estimators=50, random_state=0)
    return a, x0, table


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


# ------------------------------------------------------------------------------ Mixscape
@pytest.fixture(scope="module")
def papalexi_mixscape():
    a = ad.read_h5ad(shared_path("papalexi_eccite.h5ad"))
    table = tl.score_perturbation(a, condition_key="top_grna_target", control="non-targeting", method="mixscape",
                                  split_key="bio_rep")
    return a, table


def test_mixscape_papalexi_nt_and_ifng_pathway(papalexi_mixscape):
    a, table = papalexi_mixscape
    print("\nMixscape KO fraction per target (Papalexi ECCITE-seq):\n",
          table[["target", "n_cells", "n_de_genes", "n_ko", "ko_fraction", "status"]].to_string())
    assert a.n_obs == 20729
    nt = (a.obs["top_grna_target"] == "non-targeting").to_numpy()
    glob = a.obs["mixscape_class_global"].astype(str).to_numpy()
    assert (glob[nt] == "NT").all() and (glob[~nt] != "NT").all()
    assert (a.obs["mixscape_class"].astype(str).to_numpy()[nt] == "NT").all()
    assert set(glob[~nt]) <= {"KO", "NP"}
    assert len(table) == 25 and set(table["target"]) == set(a.obs["top_grna_target"].astype(str)) - {"non-targeting"}
    x = _lognorm(a.X)
    psmb9 = np.asarray(x[:, list(a.var_names).index("PSMB9")].todense()).ravel()
    cls = a.obs["mixscape_class"].astype(str).to_numpy()
    frac = dict(zip(table.target, table.ko_fraction, strict=True))
    for t in IFNG_TARGETS:
        assert 0.1 < frac[t] < 0.95, (t, frac[t])
        ko, np_ = cls == f"{t} KO", cls == f"{t} NP"
        assert ko.sum() + np_.sum() == (a.obs["top_grna_target"] == t).sum()
        # IFN-gamma pathway knocked out -> its target PSMB9 drops
        assert psmb9[ko].mean() < psmb9[np_].mean() - 0.5, (t, psmb9[ko].mean(), psmb9[np_].mean())
        assert psmb9[ko].mean() < psmb9[nt].mean()
    p = a.obs["mixscape_class_p_ko"].to_numpy()
    assert ((p > 0.5) == (glob == "KO")).all()
    assert (p[nt] == 0).all()


# ---------------------------------------------------------------------------- bad input
@pytest.fixture
def kang_small():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    return a[a.obs["seurat_annotations"].isin(["CD14 Mono", "B"])].copy()


def test_bad_condition_and_control(kang_small):
    obs0 = kang_small.obs.copy()
    with pytest.raises(KeyError, match=r"'condition'.*Columns that exist: stim, seurat_annotations"):
        tl.score_perturbation(kang_small, condition_key="condition", control="CTRL")
    with pytest.raises(ValueError, match=r"'ctrl'.*Values that exist: CTRL, STIM"):
        tl.score_perturbation(kang_small, condition_key="stim", control="ctrl")
    with pytest.raises(KeyError, match="cell_type_key 'celltype'"):
        tl.score_perturbation(kang_small, condition_key="stim", control="CTRL", cell_type_key="celltype")
    with pytest.raises(ValueError, match="method must be one of"):
        tl.score_perturbation(kang_small, condition_key="stim", control="CTRL", method="milo")
    pd.testing.assert_frame_equal(kang_small.obs, obs0)  # untouched
    assert not kang_small.uns


def test_augur_skips_small_types_without_crash(kang_small):
    b = kang_small[~((kang_small.obs["seurat_annotations"] == "B") & (kang_small.obs["stim"] == "CTRL"))
                   | (np.arange(kang_small.n_obs) % 10 == 0)].copy()
    t = tl.score_perturbation(b, condition_key="stim", control="CTRL", cell_type_key="seurat_annotations",
                              n_subsamples=2, n_estimators=10)
    row = t.set_index("cell_type").loc["B"]
    assert np.isnan(row.auc) and "skipped: fewer than 20 cells per condition" in row.status
    assert t.set_index("cell_type").loc["CD14 Mono", "status"] == "ok"
    assert np.isnan(b.obs.loc[b.obs["seurat_annotations"] == "B", "augur_auc"]).all()


def test_mixscape_without_de_genes_is_all_np():
    a = ad.read_h5ad(shared_path("papalexi_eccite.h5ad"))
    a = a[a.obs["top_grna_target"].isin(["non-targeting", "CD86"])].copy()
    t = tl.score_perturbation(a, condition_key="top_grna_target", control="non-targeting", method="mixscape")
    assert t.loc[0, "target"] == "CD86" and t.loc[0, "n_ko"] == 0 and "all NP" in t.loc[0, "status"]
    assert set(a.obs["mixscape_class"].astype(str)) == {"NT", "CD86 NP"}


# --------------------------------------------------------------------------- in silico
@pytest.fixture(scope="module")
def kang_scvi_dir(tmp_path_factory):
    """scVI trained on all Kang cells (no batch correction), saved by pybridge's scVI job."""
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    a.obs["sample"] = "kang"  # one batch: a plain scVI model
    d = tmp_path_factory.mktemp("scvi_kang")
    tl.integrate_scvi(a, batch_key="sample", n_top_genes=2000, max_epochs=10, batch_size=256, save_path=d,
                      device="cpu", random_state=0)  # short training is enough for the ranking
    return d


@pytest.mark.slow
def test_insilico_isg_deletion_moves_stim_monocytes_to_ctrl(kang_scvi_dir):
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    x0 = a.X.copy()
    t = tl.score_perturbation(a, condition_key="stim", control="CTRL", method="insilico", model=str(kang_scvi_dir),
                              cell_type_key="seurat_annotations", groups=["CD14 Mono"], genes=ISGS, n_random=50,
                              device="cpu", random_state=0)
    print("\nIn-silico deletion, STIM CD14 Mono -> CTRL CD14 Mono (scVI):\n",
          t[["gene", "n_cells", "goal_shift", "goal_shift_null_mean", "goal_shift_rank", "n_null",
             "goal_shift_pval", "cosine_shift"]].to_string())
    assert list(t["gene"]) == ISGS and (t["group"] == "CD14 Mono").all() and (t["status"] == "ok").all()
    assert (t["n_null"] == 50).all() and (t["n_cells"] > 250).all()
    # every ISG moves the cells towards control more than the median random gene of matched expression,
    # and together they rank at the top (mean rank within the top 10% of 51)
    assert (t["goal_shift"] > 0).all() and (t["goal_shift"] > t["goal_shift_null_mean"]).all()
    assert (t["goal_shift_rank"] <= 25).all(), t["goal_shift_rank"].tolist()
    assert t["goal_shift_rank"].mean() <= 5.1, t["goal_shift_rank"].tolist()
    assert t.loc[t.gene == "ISG15", "goal_shift_rank"].item() <= 3
    assert (a.X != x0).nnz == 0
    wide = a.uns["insilico"]["goal_shift"]
    assert list(wide.index) == ISGS and list(wide.columns) == ["CD14 Mono"]
    assert a.uns["insilico"]["params"]["encoder"]["kind"] == "scvi"


@pytest.mark.slow
def test_insilico_bad_genes_and_model(kang_scvi_dir):
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    kw = dict(condition_key="stim", control="CTRL", method="insilico", model=str(kang_scvi_dir),
              cell_type_key="seurat_annotations", groups=["CD14 Mono"])
    with pytest.raises(ValueError, match="not in the data: NOTAGENE, ALSO_NOT"):
        tl.score_perturbation(a, genes=["ISG15", "NOTAGENE", "ALSO_NOT"], **kw)
    hv = set(pd.read_json(kang_scvi_dir / "pybridge_scvi.json", typ="series")["genes"])
    outside = next(g for g in a.var_names if g not in hv)
    with pytest.raises(ValueError, match=f"not among the model's 2000 genes: {outside}"):
        tl.score_perturbation(a, genes=[outside], **kw)
    renamed = a.copy()
    names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    names[list(a.var_names).index("ISG15")] = "ISG15"
    renamed.var_names = names
    with pytest.raises(ValueError, match="data and model share only 1 genes"):
        tl.score_perturbation(renamed, genes=["ISG15"], **kw)
    with pytest.raises(ValueError, match="needs model="):
        tl.score_perturbation(a, genes=["ISG15"], **{**kw, "model": None})
    with pytest.raises(ValueError, match="groups not in obs"):
        tl.score_perturbation(a, genes=["ISG15"], **{**kw, "groups": ["Monocytes"]})
    logn = a.copy()
    logn.X = _lognorm(a.X)
    with pytest.raises(ValueError, match="non-integer"):
        tl.score_perturbation(logn, genes=["ISG15"], **kw)
    assert "insilico" not in a.uns


@pytest.mark.slow
def test_insilico_tosica_encoder(tmp_path):
    """The annotation transformer as encoder (class-token embedding), through the same adapter."""
    import scanpy as sc

    from pybridge.models import TOSICA

    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    hv = sc.pp.highly_variable_genes(a, n_top_genes=1000, flavor="seurat_v3", inplace=False)
    genes = list(a.var_names[hv["highly_variable"].to_numpy()])
    m = TOSICA(max_gene_sets=50)  # small and briefly trained: this checks the adapter, not the model
    m.fit(a, "seurat_annotations", genes=genes, max_epochs=2, device="cpu")
    m.save(tmp_path / "tosica")
    t = tl.score_perturbation(a, condition_key="stim", control="CTRL", method="insilico",
                              model=str(tmp_path / "tosica"), cell_type_key="seurat_annotations",
                              groups=["CD14 Mono"], genes=["ISG15", "IFIT1"], n_random=10, max_cells=100, device="cpu")
    print("\nIn-silico deletion with TOSICA:\n", t[["gene", "goal_shift", "goal_shift_rank", "cosine_shift"]])
    assert a.uns["insilico"]["params"]["encoder"]["kind"] == "TOSICA"
    assert (t["status"] == "ok").all() and (t["n_null"] == 10).all()
    assert np.isfinite(t[["cosine_shift", "goal_shift", "goal_shift_pval"]].to_numpy()).all()
    assert (t["cosine_shift"] > 0).all()  # deleting an expressed gene changes the embedding
