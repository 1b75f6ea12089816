"""Seurat .rds files from Python (pybridge/io/_seurat_rds.py: rpy2 + the R package's exported functions)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_path
from filehelpers import PAIRS, file_md5, same_counts, seurat_names

from pybridge.io import read_seurat, write_seurat

pytestmark = pytest.mark.needs_r


@pytest.fixture(scope="module")
def kang_rds():
    return read_seurat(shared_path("kang_ifnb_processed.rds"))


def test_read_seurat_processed_object(kang_rds):
    a = kang_rds
    assert a.shape == (2000, 13215)
    # X = counts: integers whose row sums are Seurat's nCount_RNA
    assert np.allclose(np.asarray(a.X.sum(axis=1)).ravel(), a.obs["nCount_RNA"].to_numpy())
    assert np.all(a.X.data == np.round(a.X.data))
    # the same counts as the anndata-written kang_ifnb.h5ad (same cells)
    h5 = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    assert list(a.obs_names) == list(h5.obs_names)
    assert seurat_names(h5.var_names) == list(a.var_names)
    same_counts(a, h5)
    assert a.obs["seurat_annotations"].dtype.name == "category"
    assert set(a.obs["seurat_annotations"].cat.categories) == set(h5.obs["seurat_annotations"].cat.categories)
    assert (a.obs["seurat_annotations"].astype(str) == h5.obs["seurat_annotations"].astype(str)).all()
    assert (a.obs["stim"].astype(str).to_numpy() == h5.obs["stim"].astype(str).to_numpy()).all()
    assert set(a.layers) == {"data", "scale.data"}
    assert a.obsm["X_pca"].shape == (2000, 30) and a.obsm["X_umap"].shape == (2000, 2)
    assert a.varm["PCs"].shape == (13215, 30)
    assert set(a.obsp) == {"RNA_nn", "RNA_snn"}
    meta = a.uns["pybridge"]
    assert meta["reductions"]["pca"]["key"] == "PC_"
    assert int(a.var["highly_variable"].sum()) == 2000 == len(meta["variable_features"])
    np.testing.assert_allclose(a.uns["pca"]["variance"], meta["reductions"]["pca"]["stdev"] ** 2)
    assert any("command log" in r for r in meta["report"])


@pytest.mark.parametrize("name", PAIRS)
def test_read_seurat_matches_the_h5ad_of_the_same_data(name):
    a = read_seurat(shared_path(f"{name}.rds"))
    h5 = ad.read_h5ad(shared_path(f"{name}.h5ad"))
    assert list(a.obs_names) == list(h5.obs_names)
    assert list(a.var_names) == seurat_names(h5.var_names)
    same_counts(a, h5)
    for col in h5.obs.columns:  # metadata values equal (the .rds has them as character or factor)
        if col in a.obs:
            x, y = a.obs[col], h5.obs[col]
            if x.dtype.kind in "if" and y.dtype.kind in "if":
                np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float))
            else:
                assert (x.astype(str).to_numpy() == y.astype(str).to_numpy()).all(), col
    if name == "papalexi_eccite":  # the GDO assay comes along in obsm
        gdo = a.obsm["GDO"]
        assert list(gdo.columns) == list(h5.uns["grna_names"])
        np.testing.assert_array_equal(gdo.to_numpy(), h5.obsm["grna_counts"].toarray())


def test_write_seurat_round_trip_keeps_everything(kang_rds, tmp_path):
    p = write_seurat(kang_rds, tmp_path / "kang.rds")
    assert p.exists()
    back = read_seurat(p)
    same_counts(back, kang_rds)
    for key in kang_rds.layers:
        np.testing.assert_array_equal(np.asarray(back.layers[key].todense() if sp.issparse(back.layers[key]) else back.layers[key]),
                                      np.asarray(kang_rds.layers[key].todense() if sp.issparse(kang_rds.layers[key]) else kang_rds.layers[key]))
    pd.testing.assert_frame_equal(back.obs, kang_rds.obs)
    pd.testing.assert_frame_equal(back.var, kang_rds.var)
    for key in kang_rds.obsm:
        np.testing.assert_array_equal(back.obsm[key], kang_rds.obsm[key])
    np.testing.assert_array_equal(back.varm["PCs"], kang_rds.varm["PCs"])
    for key in kang_rds.obsp:
        assert (back.obsp[key] != kang_rds.obsp[key]).nnz == 0
    assert list(back.uns["pybridge"]["variable_features"]) == list(kang_rds.uns["pybridge"]["variable_features"])
    np.testing.assert_array_equal(back.uns["pybridge"]["idents"]["codes"], kang_rds.uns["pybridge"]["idents"]["codes"])


def test_write_seurat_types_names_and_atomicity(tmp_path):
    n, g = 30, 6
    X = sp.random(n, g, density=0.5, format="csr", random_state=0)
    X.data = np.round(X.data * 10) + 1
    obs = pd.DataFrame({
        "grp": pd.Categorical(["a", "b", None] * 10, categories=["z", "a", "b"], ordered=True),
        "nint": pd.array([None if i % 4 == 0 else i for i in range(n)], dtype="Int32"),
        "nbool": pd.array([None if i % 5 == 0 else bool(i % 2) for i in range(n)], dtype="boolean"),
        "nstr": pd.array([None if i % 6 == 0 else f"s{i}" for i in range(n)], dtype="string"),
        "f": np.linspace(0, 1, n),
    }, index=[f"cell_{i}" for i in range(n)])
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"gene_{i}" for i in range(g)]))
    a.obsm["X_umap"] = np.arange(2 * n, dtype=float).reshape(n, 2)
    a.uns["info"] = {"k": 3, "label": "x", "v": np.array([1.0, 2.0])}
    target = tmp_path / "t.rds"
    write_seurat(a, target)
    back = read_seurat(target)
    same_counts(back, a)
    assert list(back.var_names) == list(a.var_names)  # '_' restored after Seurat's '-'
    assert list(back.obs_names) == list(a.obs_names)
    for col in ["grp", "nint", "nbool", "f"]:
        assert back.obs[col].dtype == a.obs[col].dtype, col
        pd.testing.assert_series_equal(back.obs[col], a.obs[col], check_names=False)
    assert back.obs["grp"].cat.ordered and list(back.obs["grp"].cat.categories) == ["z", "a", "b"]
    assert back.obs["nstr"].isna().tolist() == a.obs["nstr"].isna().tolist()
    assert back.obs["nstr"].dropna().tolist() == a.obs["nstr"].dropna().tolist()
    np.testing.assert_array_equal(back.obsm["X_umap"], a.obsm["X_umap"])
    assert int(back.uns["info"]["k"]) == 3 and str(back.uns["info"]["label"]) == "x"

    # atomic: an existing file is kept without overwrite, and a failing write leaves it untouched
    md5 = file_md5(target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_seurat(a, target)
    bad = a.copy()
    bad.obs_names = ["dup"] * n
    with pytest.raises(RuntimeError, match="duplicated"):
        write_seurat(bad, target, overwrite=True)
    assert file_md5(target) == md5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.rds"]
    write_seurat(a[:10].copy(), target, overwrite=True)
    assert read_seurat(target).n_obs == 10


def test_read_seurat_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_seurat(tmp_path / "nope.rds")
    with pytest.raises(RuntimeError, match="Assays that exist: RNA"):
        read_seurat(shared_path("pbmc_3tech.rds"), assay="ADT")
    with pytest.raises(RuntimeError, match="Layers that exist"):
        read_seurat(shared_path("pbmc_3tech.rds"), layer="scale.data")
