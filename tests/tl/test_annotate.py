"""pybridge.tl.annotate (the dispatcher R's AnnotateCells calls) and what every method shares
(pybridge.tl._label_transfer): reference labels, bad inputs, clear errors before any work."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pybridge.tl import annotate

from conftest import shared_path

METHODS = ("tosica", "scanvi", "celltypist")


@pytest.fixture(scope="module")
def pbmc_split():
    a = ad.read_h5ad(shared_path("pbmc_3tech.h5ad"))
    return a[a.obs["donor"] == "3pv2"].copy(), a[a.obs["donor"] == "5p"].copy()


def test_too_few_shared_genes_is_a_clear_error(pbmc_split):
    ref, query = pbmc_split
    small = query[:, :50].copy()
    before = small.obs.copy()
    for method in METHODS:
        with pytest.raises(ValueError, match=r"share only 50 genes.*query has 50, reference has 1767.*Ensembl"):
            annotate(small, ref, labels_key="cell_type", method=method)
    pd.testing.assert_frame_equal(small.obs, before)
    assert "predicted_celltype" not in small.uns


def test_bad_inputs(pbmc_split):
    ref, query = pbmc_split
    with pytest.raises(KeyError, match="celltype.*Columns that exist: donor"):
        annotate(query.copy(), ref, labels_key="celltype")
    lognorm = ref.copy()
    lognorm.X = sp.csr_matrix(np.log1p(lognorm.X.toarray()))
    with pytest.raises(ValueError, match="non-integer.*reference"):
        annotate(query.copy(), lognorm, labels_key="cell_type", max_epochs=1)
    with pytest.raises(ValueError, match="method must be one of"):
        annotate(query.copy(), ref, labels_key="cell_type", method="svm")
    with pytest.raises(TypeError, match="unknown option"):
        annotate(query.copy(), ref, labels_key="cell_type", n_latnet=3)
    with pytest.raises(TypeError, match="unknown option.*Options for celltypist: .*max_iter"):
        annotate(query.copy(), ref, labels_key="cell_type", method="celltypist", n_latent=3)
    with pytest.raises(ValueError, match="max_epochs is not used by method='celltypist'"):
        annotate(query.copy(), ref, labels_key="cell_type", method="celltypist", max_epochs=3)
    with pytest.raises(ValueError, match="max_epochs must be at least 1, got 0"):
        annotate(query.copy(), ref, labels_key="cell_type", max_epochs=0)
    with pytest.raises(ValueError, match="unknown_threshold must be at most 1"):
        annotate(query.copy(), ref, labels_key="cell_type", unknown_threshold=2)
    with pytest.raises(ValueError, match="give a reference AnnData"):
        annotate(query.copy(), None)


@pytest.mark.parametrize("method", METHODS)
def test_one_label_reference_is_a_clear_error_for_every_method(pbmc_split, method):
    """Issue 15: CellTypist crashed with '_ConstantPredictor' has no 'coef_'; every method now
    stops before training with what is wrong and how to fix it."""
    ref, query = pbmc_split
    one = ref[ref.obs["cell_type"] == "B"].copy()
    q = query.copy()
    with pytest.raises(ValueError, match=r"1 cell type in labels_key 'cell_type' \(only 'B'\).*at least two"):
        annotate(q, one, labels_key="cell_type", method=method)
    assert "predicted_celltype" not in q.obs
    na = ref.copy()
    na.obs["cell_type"] = pd.Categorical([np.nan] * na.n_obs, categories=["B"])
    with pytest.raises(ValueError, match=r"0 cell type.*\(none\)"):
        annotate(q, na, labels_key="cell_type", method=method)


def test_na_labels_dropped_and_small_types_named(pbmc_split, caplog):
    ref, query = pbmc_split
    r = ref.copy()
    lab = r.obs["cell_type"].astype(object).to_numpy()
    lab[:25] = None
    r.obs["cell_type"] = pd.Categorical(lab)
    q = query.copy()
    with caplog.at_level("INFO", logger="pybridge"), \
            pytest.warns(UserWarning, match=r"fewer than 10 cells: .*MK \(\d\)"):
        annotate(q, r, labels_key="cell_type", method="celltypist")
    assert "leaving out 25 of 480 reference cells with no cell_type (NA)" in caplog.text
    assert q.uns["predicted_celltype"]["train"]["n_cells"] == 480 - 25
