"""tl.insilico_deletion on real data (Kang): deleting interferon genes in STIM CD14 monocytes
moves them towards CTRL more than deleting matched random genes (scVI encoder)."""

import anndata as ad
import pandas as pd
import pytest
from conftest import shared_path

from pybridge import tl
from pybridge.tl._perturbation_utils import lognorm

ISGS = ["ISG15", "IFI6", "IFIT1", "MX1"]


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
    t = tl.insilico_deletion(a, "stim", "CTRL", model=str(kang_scvi_dir), cell_type_key="seurat_annotations",
                             groups=["CD14 Mono"], genes=ISGS, n_random=50, device="cpu", random_state=0)
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
    with pytest.raises(ValueError, match=f"not among the encoder's 2000 genes: {outside}"):
        tl.score_perturbation(a, genes=[outside], **kw)
    renamed = a.copy()
    names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    names[list(a.var_names).index("ISG15")] = "ISG15"
    renamed.var_names = names
    with pytest.raises(ValueError, match="data and encoder share only 1 genes"):
        tl.score_perturbation(renamed, genes=["ISG15"], **kw)
    with pytest.raises(ValueError, match="needs model="):
        tl.score_perturbation(a, genes=["ISG15"], **{**kw, "model": None})
    with pytest.raises(ValueError, match="groups not in obs"):
        tl.score_perturbation(a, genes=["ISG15"], **{**kw, "groups": ["Monocytes"]})
    logn = a.copy()
    logn.X = lognorm(a.X)
    with pytest.raises(ValueError, match="non-integer"):
        tl.score_perturbation(logn, genes=["ISG15"], **kw)
    assert "insilico" not in a.uns


def test_insilico_needs_model_and_genes_before_any_work():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    with pytest.raises(ValueError, match="needs model="):
        tl.insilico_deletion(a, "stim", "CTRL", model=None, genes=["ISG15"])
    with pytest.raises(ValueError, match="needs genes="):
        tl.insilico_deletion(a, "stim", "CTRL", model="/nonexistent", genes=[])
    with pytest.raises(ValueError, match="genes to delete not in the data: NOTAGENE"):
        tl.insilico_deletion(a, "stim", "CTRL", model="/nonexistent", genes=["ISG15", "NOTAGENE"])
    with pytest.raises(ValueError, match="goal 'MIDDLE' is not a value"):
        tl.insilico_deletion(a, "stim", "CTRL", model="/nonexistent", genes=["ISG15"], goal="MIDDLE")
    assert "insilico" not in a.uns
