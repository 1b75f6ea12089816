"""The one AnnData layout (pybridge/io/_layout.py): the R package's copy is current, the bridge puts
every part where the table says, and anndata writes the encodings the table lists."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import ROOT, shared_path

from pybridge.io import read_seurat
from pybridge.io._layout import ENCODINGS, LAYOUT, obsm_key, r_source, reduction_name, varm_key


def test_r_copy_of_the_table_is_current():
    r_file = ROOT / "r-package" / "R" / "h5ad-layout.R"
    assert r_file.read_text() == r_source(), (
        "r-package/R/h5ad-layout.R is out of date: run `python -m pybridge.io._layout > r-package/R/h5ad-layout.R`")


def test_key_rules():
    assert obsm_key("pca") == "X_pca" and reduction_name("X_pca") == "pca" and reduction_name("spatial") == "spatial"
    assert varm_key("pca") == "PCs" and varm_key("ica") == "ica_loadings"


@pytest.fixture(scope="module")
def kang_bridge():
    """The processed Kang object through the bridge (R's .seurat_to_parts -> anndata_from_parts)."""
    return read_seurat(shared_path("kang_ifnb_processed.rds"))


@pytest.mark.needs_r
def test_bridge_follows_the_table(kang_bridge):
    a = kang_bridge
    meta = a.uns[LAYOUT["meta"]]
    assert set(meta) <= set(LAYOUT["meta_keys"])
    reds = meta["reductions"]
    assert set(reds) == {"pca", "umap"}
    assert set(a.obsm) == {obsm_key(r) for r in reds}
    assert set(a.varm) == {varm_key("pca")}  # umap has no loadings
    for info in reds.values():
        assert set(info) <= set(LAYOUT["reduction_keys"])
    assert set(meta["idents"]) == set(LAYOUT["idents_keys"])
    hv = a.var[LAYOUT["highly_variable"]]
    assert int(hv.sum()) == len(meta["variable_features"]) == 2000
    key, entry = LAYOUT["pca_variance"]
    np.testing.assert_allclose(a.uns[key][entry], reds["pca"]["stdev"] ** 2)
    assert LAYOUT["scale_data"] in a.layers and set(a.layers) <= set(LAYOUT["seurat_layers"])
    assert list(meta["uns_generated"]) == [key]


def _encodings(path) -> dict:
    """encoding-type -> set of encoding-versions of every element of an h5 file."""
    seen: dict = {}

    def visit(_name, obj):
        t = obj.attrs.get("encoding-type")
        if t is not None:
            seen.setdefault(str(t), set()).add(str(obj.attrs.get("encoding-version")))

    with h5py.File(path, "r") as f:
        visit("/", f)
        f.visititems(visit)
    return seen


def test_anndata_writes_the_encodings_of_the_table(tmp_path):
    n, g = 12, 5
    obs = pd.DataFrame({
        "cat": pd.Categorical(list("ab") * 6),
        "nint": pd.array([None if i % 3 == 0 else i for i in range(n)], dtype="Int32"),
        "nbool": pd.array([None if i % 4 == 0 else i % 2 == 0 for i in range(n)], dtype="boolean"),
        "nstr": pd.array([None if i % 5 == 0 else f"s{i}" for i in range(n)], dtype="string"),
        "txt": [f"t{i}" for i in range(n)],
    }, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(X=sp.random(n, g, density=0.5, format="csr", random_state=0), obs=obs)
    a.layers["csc"] = sp.csc_matrix(a.X)
    a.obsm["dense"] = np.ones((n, 2))
    a.uns.update({"d": {"x": 1.5, "s": "str"}, "rec": np.rec.fromarrays([np.arange(3)], names="v"), "none": None})
    a.raw = a
    f = tmp_path / "all.h5ad"
    ad.settings.allow_write_nullable_strings = True
    try:
        a.write_h5ad(f, convert_strings_to_categoricals=False)
    finally:
        ad.settings.allow_write_nullable_strings = False
    seen = _encodings(f)
    assert set(seen) == set(ENCODINGS), set(seen) ^ set(ENCODINGS)
    for enc, versions in seen.items():
        assert versions == {ENCODINGS[enc]}, enc

