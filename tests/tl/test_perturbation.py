"""score_perturbation, the dispatcher R calls: argument checks and the mapping onto each method."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from pybridge import tl


@pytest.fixture
def kang_small():
    a = ad.read_h5ad(shared_path("kang_ifnb.h5ad"))
    return a[a.obs["seurat_annotations"].isin(["CD14 Mono", "B"])].copy()


def test_bad_condition_and_control(kang_small):
    obs0 = kang_small.obs.copy()
    with pytest.raises(KeyError, match=r"'condition'.*Columns that exist: stim, seurat_annotations"):
        tl.score_perturbation(kang_small, condition_key="condition", control="CTRL")
    with pytest.raises(ValueError, match=r"'ctrl'.*Values that exist: CTRL, STIM"):
        tl.score_perturbation(kang_small, condition_key="stim", control="ctrl")
    with pytest.raises(KeyError, match="cell_type_key 'celltype'"):
        tl.score_perturbation(kang_small, condition_key="stim", control="CTRL", cell_type_key="celltype")
    with pytest.raises(ValueError, match="method must be one of"):
        tl.score_perturbation(kang_small, condition_key="stim", control="CTRL", method="milo")
    with pytest.raises(KeyError, match="split_key 'replicate'"):
        tl.score_perturbation(kang_small, condition_key="stim", control="CTRL", method="mixscape",
                              split_key="replicate")
    with pytest.raises(ValueError, match="device must be one of"):
        tl.score_perturbation(kang_small, condition_key="stim", control="CTRL", device="tpu")
    pd.testing.assert_frame_equal(kang_small.obs, obs0)  # untouched
    assert not kang_small.uns


def test_dispatcher_is_the_method(kang_small):
    """score_perturbation(method="augur") gives tl.augur's table and keys (key_added maps)."""
    kw = dict(n_subsamples=2, n_estimators=10, random_state=3)
    a, b = kang_small.copy(), kang_small.copy()
    t1 = tl.score_perturbation(a, condition_key="stim", control="CTRL", cell_type_key="seurat_annotations",
                               key_added="aug", **kw)
    t2 = tl.augur(b, "stim", "CTRL", cell_type_key="seurat_annotations", key_added="aug", **kw)
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(a.obs["aug_score"], b.obs["aug_score"])
    assert set(a.uns) == {"aug"}
