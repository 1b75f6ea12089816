"""pybridge._core._progress and ._uns."""

import json
from pathlib import Path

import anndata as ad
import numpy as np

from pybridge._core import clean_uns, progress, settings


def test_progress_lines_have_counts_and_eta(capsys):
    with settings.override("info"):
        assert list(progress(range(4), desc="augur: B", every=0)) == [0, 1, 2, 3]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("augur: B: 1/4 (25%)") and "ETA" in err[0]
    assert err[-1].startswith("augur: B: 4/4 (100%)")
    with settings.override("warning"):
        assert sum(progress(range(3), desc="x", every=0)) == 3
    assert capsys.readouterr().err == ""


def test_clean_uns_is_h5ad_storable(tmp_path):
    d = clean_uns({"none": None, "tuple": (1, 2), "mixed": [1, "x", None], "np": np.float32(0.5),
                   "path": Path("/a/b"), "nested": {"k": None, 3: np.int64(2)}, "arr": np.arange(3),
                   "obj": object})
    assert d["tuple"] == [1, 2] and d["mixed"] == ["1", "x"] and d["np"] == 0.5 and d["path"] == "/a/b"
    assert d["nested"] == {"3": 2} and "none" not in d and isinstance(d["obj"], str)
    a = ad.AnnData(np.zeros((2, 2)))
    a.uns["p"] = d
    a.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad").uns["p"]
    assert list(back["mixed"]) == ["1", "x"] and back["nested"]["3"] == 2
    json.dumps({k: v for k, v in d.items() if k != "arr"})
