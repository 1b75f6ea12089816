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
    assert (glob[nt] == "NT").all() and (glob[~nt] != "NT").all()
    assert (a.obs["mixscape_class"].astype(str).to_numpy()[nt] == "NT").all()
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
    assert set(a.obs["mixscape_class"].astype(str)) == {"NT", "CD86 NP"}
