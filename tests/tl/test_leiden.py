"""pybridge.tl.leiden: scanpy's (igraph) Leiden on Seurat's SNN graph, labels by decreasing size."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

from pybridge import pp, tl


def test_leiden_is_scanpys_relabelled_by_size():
    rng = np.random.default_rng(0)
    sizes = (150, 60, 90)
    centres = rng.normal(scale=8, size=(3, 10))
    x = np.vstack([c + rng.normal(size=(n, 10)) for c, n in zip(centres, sizes)]).astype(np.float32)
    a = ad.AnnData(x)
    a.obsm["X_pca"] = x
    pp.neighbors(a, n_neighbors=20, snn=True, device="cpu")
    with pytest.raises(KeyError, match="obsp 'nn' is not in adata.obsp. Keys that exist: .*snn"):
        tl.leiden(a, obsp="nn", device="cpu")
    tl.leiden(a, resolution=0.5, obsp="snn", key_added="cl", device="cpu")
    lab = a.obs["cl"]
    assert list(lab.cat.categories) == ["0", "1", "2"]
    assert lab.value_counts().to_dict() == {"0": 150, "2": 60, "1": 90}
    assert a.uns["cl"]["params"]["backend"] == "scanpy"
    truth = np.repeat(np.arange(3), sizes)
    assert adjusted_rand_score(truth, lab) == 1.0
    ref = a.copy()
    sc.tl.leiden(ref, resolution=0.5, obsp="snn", flavor="igraph", n_iterations=-1, directed=False,
                 random_state=0, key_added="ref")
    assert adjusted_rand_score(ref.obs["ref"], lab) == 1.0
