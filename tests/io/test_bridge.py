"""The Seurat <-> AnnData mapping (pybridge/io/_bridge.py): parts from R become an AnnData and
back; the Seurat 5 records (layer split, assay class) survive memory and h5ad files; .rds files
with Seurat 5 split layers through rpy2 (in the Seurat 5 tier, where R has SeuratObject 5)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import shared_path

from pybridge.io import anndata_from_parts, anndata_to_parts
from pybridge.io._parts import df_to_parts, sparse_to_parts


def test_anndata_parts_round_trip_in_python(pbmc3):
    """anndata_to_parts (sent to R) holds exactly what anndata_from_parts (sent by R) needs."""
    a = pbmc3[:200].copy()
    a.layers["counts"] = a.X.copy()
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 5))
    a.obsp["knn"] = sp.random(a.n_obs, a.n_obs, density=0.05, format="csr", random_state=1)
    a.uns["note"] = {"a": np.arange(3), "b": "text"}
    out = anndata_to_parts(a, X_layer="data")
    parts = {"cells": out["cells"], "features": out["features"], "X": out["layers"]["counts"],
             "X_layer": "counts", "layers": {"data": out["layers"]["data"]}, "obs": out["obs"], "var": out["var"],
             "reductions": {k: v for k, v in out["reductions"].items()}, "graphs": out["graphs"],
             "misc": out["misc"]}
    b = anndata_from_parts(parts)
    assert (b.X != a.layers["counts"]).nnz == 0
    assert (b.layers["data"] != a.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs, check_dtype=False)  # (int64 -> R integer -> int32)
    np.testing.assert_array_equal(b.obsm["X_pca"], a.obsm["X_pca"])
    assert (b.obsp["knn"] != a.obsp["knn"]).nnz == 0
    np.testing.assert_array_equal(b.uns["note"]["a"], np.arange(3))
    assert b.uns["note"]["b"] == "text"


def _v5_parts(n_cells=6, n_genes=4):
    rng = np.random.default_rng(0)
    X = sp.random(n_cells, n_genes, density=0.6, format="csr", random_state=0)
    X.data = np.round(X.data * 9) + 1
    cells = [f"c{i}" for i in range(n_cells)]
    split = pd.Categorical(rng.choice(["B", "A"], n_cells), categories=["A", "B"])
    obs = df_to_parts(pd.DataFrame({"split.layer": split}, index=cells))
    obs.pop("notes")
    return X, split, {
        "cells": np.array(cells), "features": np.array([f"g{j}" for j in range(n_genes)]),
        "X": {"sparse": sparse_to_parts(X)}, "X_layer": "counts", "obs": obs,
        "assay_class": "Assay5", "split": {"key": "split.layer", "levels": np.array(["A", "B"]), "added": True,
                                           "layers": np.array(["counts", "data"])},
    }


def test_split_and_assay_class_are_recorded_and_returned(tmp_path):
    """R's parts$split / assay_class -> uns['pybridge'] -> the parts R gets back, also through h5ad."""
    X, split, parts = _v5_parts()
    a = anndata_from_parts(parts)
    assert (a.X != X).nnz == 0
    assert list(a.obs["split.layer"]) == list(split)
    meta = a.uns["pybridge"]
    assert meta["assay_class"] == "Assay5"
    assert meta["split"]["key"] == "split.layer" and meta["split"]["added"] is True
    assert list(meta["split"]["levels"]) == ["A", "B"] and list(meta["split"]["layers"]) == ["counts", "data"]
    f = tmp_path / "v5.h5ad"
    a.write_h5ad(f)
    for b in (a, ad.read_h5ad(f)):
        out = anndata_to_parts(b)
        assert out["assay_class"] == "Assay5"
        assert out["split"]["key"] == "split.layer" and out["split"]["added"] is True
        assert list(out["split"]["levels"]) == ["A", "B"] and list(out["split"]["layers"]) == ["counts", "data"]
    # an AnnData from elsewhere has neither: R picks its own assay class and splits nothing
    plain = ad.AnnData(X)
    out = anndata_to_parts(plain)
    assert out["assay_class"] is None and out["split"] is None


def _r():
    ro = pytest.importorskip("rpy2.robjects", reason="needs rpy2 (pip install 'pybridge[r]')")
    try:
        ver = ro.r('as.character(packageVersion("SeuratObject"))')[0]
        ro.r("suppressPackageStartupMessages(library(pybridge))")
    except Exception as e:  # noqa: BLE001 - no R / no pybridge R package
        pytest.skip(f"needs R with SeuratObject and the pybridge R package: {e}")
    if int(ver.split(".")[0]) < 5:
        pytest.skip(f"needs SeuratObject >= 5 in R (this is {ver}): runs in the Seurat 5 tier (make test-seurat5)")
    return ro


@pytest.mark.needs_r
def test_read_and_write_seurat_with_split_v5_layers(tmp_path):
    """read_seurat joins split Assay5 layers (obs['split.layer']); write_seurat writes them split again."""
    ro = _r()
    from pybridge.io import read_seurat, write_seurat

    src = tmp_path / "pbmc_v5_split.rds"
    ro.r(f"""
    local({{
      obj <- suppressMessages(suppressWarnings(SeuratObject::UpdateSeuratObject(readRDS("{shared_path('pbmc_3tech.rds')}"))))
      suppressWarnings(obj[["RNA"]] <- as(obj[["RNA"]], "Assay5"))
      md <- obj@meta.data
      obj[["RNA"]] <- suppressMessages(split(obj[["RNA"]], f = obj$donor))
      obj@meta.data <- md
      saveRDS(obj, "{src}")
    }})""")
    a = read_seurat(src)
    v4 = read_seurat(shared_path("pbmc_3tech.rds"))
    assert list(a.obs_names) == list(v4.obs_names)
    assert (sp.csr_matrix(a.X) != sp.csr_matrix(v4.X)).nnz == 0  # joined: the unsplit counts, bit-equal
    assert list(a.obs["split.layer"].astype(str)) == list(v4.obs["donor"].astype(str))
    assert a.uns["pybridge"]["assay_class"] == "Assay5"
    out = tmp_path / "back.rds"
    write_seurat(a, out)
    same = ro.r(f"""
    local({{
      x <- readRDS("{src}"); y <- readRDS("{out}")
      c(class = inherits(y[["RNA"]], "Assay5"),
        layers = setequal(SeuratObject::Layers(x[["RNA"]]), SeuratObject::Layers(y[["RNA"]])),
        values = all(vapply(SeuratObject::Layers(x[["RNA"]]), function(l)
          identical(SeuratObject::LayerData(x, layer = l), SeuratObject::LayerData(y, layer = l)), logical(1))),
        meta = identical(x@meta.data, y@meta.data))
    }})""")
    assert dict(zip(same.names, list(same))) == {"class": True, "layers": True, "values": True, "meta": True}
