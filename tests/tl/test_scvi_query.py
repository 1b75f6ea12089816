"""pybridge.tl.map_query_scvi: checks before any work (a trained reference + query mapping is tested
end to end in test_scvi.py::test_scanvi_reference_query_mapping)."""

import json

import anndata as ad
import numpy as np
import pytest
from conftest import shared_path

import pybridge.tl as tl
from pybridge.tl import _scvi_data


def _small(n_per_batch=60):
    a = ad.read_h5ad(shared_path("pbmc_3tech.h5ad"))
    keep = np.concatenate([np.flatnonzero(a.obs["donor"].to_numpy() == d)[:n_per_batch] for d in ("3pv2", "5p")])
    return a[keep].copy()


def test_map_query_bad_inputs(tmp_path):
    a = _small()
    with pytest.raises(FileNotFoundError, match="model.pt and pybridge_scvi.json"):
        tl.map_query_scvi(a, tmp_path)
    # a fake model dir: only the json is read before the checks below
    (tmp_path / "model.pt").write_bytes(b"")
    info = {"format": "pybridge-scvi/1", "model_class": "SCVI", "genes": list(a.var_names[:200]),
            "batch_key": "sample", "batches": ["x"], "labels_key": None, "categorical_covariate_keys": [],
            "continuous_covariate_keys": []}
    (tmp_path / _scvi_data.MODEL_INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(KeyError, match=r"'sample' \(the model's batch_key\).*Columns that exist: donor"):
        tl.map_query_scvi(a, tmp_path)
    b = a[:, 150:].copy()  # only 50 of the 200 model genes
    with pytest.raises(ValueError, match=r"share only 50 genes.*at least 100"):
        tl.map_query_scvi(b, tmp_path, batch_key="donor")
    assert "X_scVI" not in a.obsm and "X_scVI" not in b.obsm


def test_map_query_epochs_zero_means_no_training_negative_is_an_error(tmp_path):
    a = _small()
    with pytest.raises(ValueError, match="max_epochs must be at least 0, got -1"):
        tl.map_query_scvi(a, tmp_path, max_epochs=-1)  # checked before the model directory is read
    with pytest.raises(FileNotFoundError):  # 0 (documented: no training) passes the check
        tl.map_query_scvi(a, tmp_path, max_epochs=0)
