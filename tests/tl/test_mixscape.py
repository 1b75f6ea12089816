"""tl.mixscape on real data (Papalexi ECCITE-seq): NT / KO / NP calls, IFN-gamma pathway targets."""

import anndata as ad
import numpy as np
import pytest
from conftest import shared_path

from pybridge import tl
from pybridge.tl._perturbation_utils import lognorm

IFNG_TARGETS = ["IFNGR1", "IFNGR2", "JAK2", "STAT1"]


@pytest.fixture(scope="module")
def papalexi_mixscape():
    a = ad.read_h5ad(shared_path("papalexi_eccite.h5ad"))
    table = tl.mixscape(a, "top_grna_target", "non-targeting", split_by="bio_rep")
    return a, table


def test_mixscape_papalexi_nt_and_ifng_pathway(papalexi_mixscape):
    a, table = papalexi_mixscape
    print("\nMixscape KO fraction per target (Papalexi ECCITE-seq):\n",
          table[["target", "n_cells", "n_de_genes", "n_ko", "ko_fraction", "status"]].to_string())
    assert a.n_obs == 20729
    nt = (a.obs["top_grna_target"] == "non-targeting").to_numpy()
    glob = a.obs["mixscape_class_global"].astype(str).to_numpy()
    # Seurat's RunMixscape and pertpy: non-targeting cells keep the control label in both columns
    assert (glob[nt] == "non-targeting").all() and (glob[~nt] != "non-targeting").all()
    assert (a.obs["mixscape_class"].astype(str).to_numpy()[nt] == "non-targeting").all()
    assert set(glob[~nt]) <= {"KO", "NP"}
    assert len(table) == 25 and set(table["target"]) == set(a.obs["top_grna_target"].astype(str)) - {"non-targeting"}
    x = lognorm(a.X)
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


def test_mixscape_without_de_genes_is_all_np():
    a = ad.read_h5ad(shared_path("papalexi_eccite.h5ad"))
    a = a[a.obs["top_grna_target"].isin(["non-targeting", "CD86"])].copy()
    t = tl.mixscape(a, "top_grna_target", "non-targeting")
    assert t.loc[0, "target"] == "CD86" and t.loc[0, "n_ko"] == 0 and "all NP" in t.loc[0, "status"]
    assert set(a.obs["mixscape_class"].astype(str)) == {"non-targeting", "CD86 NP"}
    assert (a.obs["mixscape_class_p_ko"] == 0).all()


def test_mixscape_signature_and_scores_as_seurat_and_pertpy(papalexi_mixscape):
    """layers["X_pert"] (Seurat's PRTB assay: NT-neighbour mean minus the cell) and the first projection
    of each target (Seurat's Tool(object, "RunMixscape"), pertpy's uns["mixscape"][target][split])."""
    a, table = papalexi_mixscape
    sig = a.layers["X_pert"]
    assert sig.shape == a.shape and sig.dtype == np.float32 and np.isfinite(sig).all()
    x = lognorm(a.X)
    g = list(a.var_names).index("PSMB9")
    ko = (a.obs["mixscape_class"] == "IFNGR2 KO").to_numpy()
    nt = (a.obs["top_grna_target"] == "non-targeting").to_numpy()
    # KO cells lost PSMB9: their NT neighbours express more -> positive signature (Seurat's sign); NT
    # cells are near 0 (slightly positive: log1p of the neighbours' mean count >= mean of log1p)
    assert sig[ko, g].mean() > 1.5 and 0 <= sig[nt, g].mean() < 0.4
    # the signature is the neighbour mean minus the cell: adding the cell back gives a non-negative log mean
    assert (sig[:, g] + np.asarray(x[:, g].todense()).ravel() > -1e-4).all()
    pv = a.uns["mixscape"]["pvec"]
    assert list(pv.columns) == ["cell", "target", "split", "pvec", "label"]
    stat1 = pv[pv["target"] == "STAT1"]
    assert set(stat1["split"]) == set(a.obs["bio_rep"].astype(str))
    n_stat1 = int((a.obs["top_grna_target"] == "STAT1").sum())
    assert len(stat1) == n_stat1 + int(nt.sum()) and set(stat1["label"]) == {"STAT1", "non-targeting"}
    lab = a.obs.loc[stat1["cell"], "top_grna_target"].astype(str).to_numpy()
    assert (lab == stat1["label"].to_numpy()).all()
    # the KO cells project further along the KO direction than the NP cells and the NT cells
    cls = a.obs.loc[stat1["cell"], "mixscape_class"].astype(str).to_numpy()
    p = stat1["pvec"].to_numpy()
    assert p[cls == "STAT1 KO"].mean() > p[cls == "STAT1 NP"].mean() > p[cls == "non-targeting"].mean() - 0.05
    assert set(pv["target"]) == set(a.uns["mixscape"]["de_genes"])
    assert a.uns["mixscape"]["params"]["perturbation_type"] == "KO" and a.uns["mixscape"]["params"]["scale"]
