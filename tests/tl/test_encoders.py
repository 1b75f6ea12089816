"""Encoder adapters (pybridge.tl._encoders): what load_encoder accepts and refuses; TOSICA as encoder."""

import anndata as ad
import numpy as np
import pytest
from conftest import shared_path

from pybridge import tl
from pybridge.tl._encoders import AnnDataEncoder, load_encoder


def test_load_encoder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model=.*: no such directory"):
        load_encoder(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"holds nothing pybridge can use as an encoder \(found: notes.txt\)"):
        load_encoder(tmp_path)
    with pytest.raises(TypeError, match="cannot use a int as an encoder"):
        load_encoder(3)


def test_anndata_encoder_passes_counts_and_checks_rows():
    class Mean:
        genes = ["a", "b", "c"]

        def embed(self, adata):
            return np.asarray(adata.X.todense())[:, :2] * 2

    enc = load_encoder(Mean())
    assert isinstance(enc, AnnDataEncoder) and enc.genes == ["a", "b", "c"]
    enc.bind(ad.AnnData(X=np.ones((4, 3), np.float32)))
    z = enc.embed(np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0, 0]))  # rows may repeat
    np.testing.assert_array_equal(z, [[0, 2], [6, 8]])
    assert z.dtype == np.float64

    class Wrong(Mean):
        def embed(self, adata):
            return np.zeros((1, 2))

    bad = load_encoder(Wrong())
    bad.bind(ad.AnnData(X=np.ones((4, 3), np.float32)))
    with pytest.raises(ValueError, match="returned 1 rows for 2 cells"):
        bad.embed(np.ones((2, 3), np.float32), np.array([0, 1]))


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
    t = tl.insilico_deletion(a, "stim", "CTRL", model=str(tmp_path / "tosica"), cell_type_key="seurat_annotations",
                             groups=["CD14 Mono"], genes=["ISG15", "IFIT1"], n_random=10, max_cells=100, device="cpu")
    print("\nIn-silico deletion with TOSICA:\n", t[["gene", "goal_shift", "goal_shift_rank", "cosine_shift"]])
    assert a.uns["insilico"]["params"]["encoder"]["kind"] == "TOSICA"
    assert (t["status"] == "ok").all() and (t["n_null"] == 10).all()
    assert np.isfinite(t[["cosine_shift", "goal_shift", "goal_shift_pval"]].to_numpy()).all()
    assert (t["cosine_shift"] > 0).all()  # deleting an expressed gene changes the embedding
