"""pybridge.pp._recipes: run_chain = the public steps, inputs of the steps left out, clear errors
before any work, and (slow) the whole chain on Kang with clusters and graph."""

import numpy as np
import pytest
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

from pybridge import pp
from pybridge.pp._recipes import chain_inputs


def test_public_functions_equal_run_chain(pbmc3_counts):
    a = pbmc3_counts
    chain = a.copy()
    pp.run_chain(chain, steps=["normalize", "hvg", "scale", "pca"], n_top_genes=500, n_comps=20, device="cpu")
    b = a.copy()
    pp.highly_variable_genes(b, n_top_genes=500, device="cpu")
    pp.normalize_total(b, target_sum=1e4, device="cpu")
    pp.log1p(b, device="cpu")
    assert abs(b.X - chain.X).max() == 0
    np.testing.assert_array_equal(b.var["highly_variable"], chain.var["highly_variable"])
    c = b[:, b.var["highly_variable"].to_numpy()].copy()
    pp.scale(c, max_value=10, device="cpu")
    np.testing.assert_allclose(c.X, chain.obsm["X_scaled"], atol=1e-6)
    pp.pca(c, n_comps=20, device="cpu")
    np.testing.assert_allclose(np.abs(c.obsm["X_pca"]), np.abs(chain.obsm["X_pca"]), atol=1e-4)
    info = chain.uns["preprocess"]
    assert info["steps"] == ["normalize", "hvg", "scale", "pca"] and info["params"]["n_top_genes"] == 500
    assert set(info["seconds"]) == {"to_device", "normalize", "hvg", "scale", "pca", "to_host", "total"}


def test_chain_inputs_and_steps_left_out(pbmc3_counts, capsys):
    assert chain_inputs(["pca", "normalize"]) == dict(steps=["normalize", "pca"], counts=True, data=False,
                                                     highly_variable=True, scaled=True, pca=False)
    assert chain_inputs("neighbors") == dict(steps=["neighbors"], counts=False, data=False,
                                             highly_variable=False, scaled=False, pca=True)
    full = pbmc3_counts.copy()
    pp.run_chain(full, steps=["normalize", "hvg", "scale", "pca"], n_top_genes=300, device="cpu")
    # scale + pca from the log-normalised X and var["highly_variable"] of an earlier run
    again = full.copy()
    del again.obsm["X_scaled"], again.obsm["X_pca"]
    pp.run_chain(again, steps=["scale", "pca"], device="cpu", verbose=True)
    np.testing.assert_allclose(again.obsm["X_scaled"], full.obsm["X_scaled"], atol=1e-6)
    np.testing.assert_allclose(np.abs(again.obsm["X_pca"]), np.abs(full.obsm["X_pca"]), atol=1e-4)
    err = capsys.readouterr().err
    assert "preprocess 1/2: scale done in" in err and "preprocess 2/2: pca done in" in err
    # pca alone, from obsm["X_scaled"]; fewer components
    p = full.copy()
    pp.run_chain(p, steps="pca", n_comps=10, device="cpu")
    np.testing.assert_allclose(np.abs(p.obsm["X_pca"]), np.abs(full.obsm["X_pca"][:, :10]), atol=1e-4)
    # without var["highly_variable"]: all genes, with a note
    g = full[:, full.var["highly_variable"].to_numpy()].copy()
    del g.var["highly_variable"]
    pp.run_chain(g, steps=["scale"], device="cpu")
    np.testing.assert_allclose(g.obsm["X_scaled"], full.obsm["X_scaled"], atol=1e-6)
    assert "using all genes" in capsys.readouterr().err
    # nfeatures above the number of genes: all genes, with a note (Seurat's FindVariableFeatures)
    s = pbmc3_counts[:, :200].copy()
    pp.run_chain(s, steps=["hvg"], n_top_genes=2000, device="cpu", verbose=False)
    assert s.var["highly_variable"].all() and s.uns["preprocess"]["params"]["n_top_genes"] == 200


def test_bad_input_gives_clear_errors_before_any_work(pbmc3_counts, pbmc3_logged):
    a = pbmc3_counts.copy()
    logged = pbmc3_logged.copy()
    with pytest.raises(ValueError, match="non-integer"):
        pp.run_chain(logged, n_top_genes=100, device="cpu")
    with pytest.raises(ValueError, match="unknown step"):
        pp.run_chain(a, steps=["normalise"], device="cpu")
    with pytest.raises(ValueError, match="steps is empty"):
        pp.run_chain(a, steps=[], device="cpu")
    with pytest.raises(ValueError, match="device must be"):
        pp.run_chain(a, device="gpu")
    with pytest.raises(ValueError, match=r"need a PCA in obsm\['X_pca'\] \(Seurat: a 'pca' reduction\); obsm has"):
        pp.run_chain(a.copy(), steps=["neighbors"], device="cpu")
    with pytest.raises(ValueError, match=r"n_pcs \(60\) exceeds n_comps \(50\)"):
        pp.run_chain(a, n_pcs=60, device="cpu")
    with pytest.raises(ValueError, match=r"'pca' without 'scale' needs .*obsm\['X_scaled'\]"):
        pp.run_chain(logged, steps=["pca"], device="cpu")
    with pytest.raises(ValueError, match="'umap' and 'clusters' need the neighbour graph"):
        pp.run_chain(a, steps=["umap", "clusters"], device="cpu")
    with pytest.raises(ValueError, match="cluster_on must be"):
        pp.run_chain(a, cluster_on="knn", device="cpu")
    with pytest.raises(ValueError, match=r"n_comps=600 must be between 1 and"):
        pp.run_chain(a, n_top_genes=500, n_comps=600, device="cpu")
    with pytest.raises(ValueError, match="svd_solver must be"):
        pp.run_chain(a, svd_solver="lapack", device="cpu")
    assert (a.X != pbmc3_counts.X).nnz == 0 and not a.obsm and "highly_variable" not in a.var


@pytest.mark.slow
def test_full_chain_on_kang_clusters_and_graph(ppdata):
    a = ppdata.read_only(ppdata.load("kang_ifnb"))
    b = a.copy()
    ppdata.read_only(b)
    pp.run_chain(b, device="cpu", random_state=0)
    info = b.uns["preprocess"]
    assert info["device"] == "cpu" and info["steps"][-1] == "clusters" and info["params"]["n_pcs"] == 30
    assert b.uns["neighbors"]["params"]["backend"] == "scanpy"
    assert b.obsm["X_umap"].shape == (2000, 2) and np.isfinite(b.obsm["X_umap"]).all()
    knn = b.obsp["distances"]
    assert np.all(np.diff(knn.indptr) == 19)  # 20 neighbours, the cell itself included
    labels = b.obs["leiden"]
    sizes = labels.value_counts()
    assert list(labels.cat.categories) == [str(i) for i in range(len(sizes))]
    assert sizes.loc["0"] == sizes.max()
    # measured: 11 clusters, ARI 0.48 with the 13 published cell types (Seurat's own pipeline: 0.48)
    assert 8 <= len(sizes) <= 16
    assert adjusted_rand_score(b.obs["seurat_annotations"], labels) > 0.4
    # clustering = scanpy's own Leiden on the same graph (no re-implementation)
    c = b.copy()
    sc.tl.leiden(c, resolution=0.8, obsp="snn", flavor="igraph", n_iterations=-1, directed=False,
                 random_state=0, key_added="ref")
    assert adjusted_rand_score(c.obs["ref"], labels) == 1.0
