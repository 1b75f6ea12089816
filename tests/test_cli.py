"""The command line (pybridge/cli.py): `pybridge convert` between .rds and .h5ad."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
from conftest import shared_path
from filehelpers import PAIRS, RDS, file_md5, same_counts

from pybridge.cli import main as cli_main
from pybridge.io import read_seurat

pytestmark = pytest.mark.needs_r


# the fast tier converts one file (pbmc_3tech); `make test` every shared .rds
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "pbmc_3tech" else pytest.mark.slow) for n in RDS])
def test_cli_converts_every_shared_rds_to_h5ad_scanpy_reads(name, tmp_path):
    import scanpy as sc

    out = tmp_path / f"{name}.h5ad"
    # the conversion itself, in this process (its R already running); the command's child process
    # and its signals are tested below (test_cli_command_line, test_cli_ctrl_c_...)
    assert cli_main(["convert", str(shared_path(f"{name}.rds")), str(out), "--quiet", "--in-process"]) == 0
    a = sc.read_h5ad(out)
    ref = read_seurat(shared_path(f"{name}.rds"))  # the same object through rpy2
    assert list(a.obs_names) == list(ref.obs_names) and list(a.var_names) == list(ref.var_names)
    same_counts(a, ref)
    for col in ref.obs.columns:
        assert (a.obs[col].astype(str).to_numpy() == ref.obs[col].astype(str).to_numpy()).all(), col
    if name in PAIRS:  # and the counts of the anndata-written file of the same data
        same_counts(a, ad.read_h5ad(shared_path(f"{name}.h5ad")))
    if name == "kang_ifnb_processed":
        np.testing.assert_array_equal(a.obsm["X_pca"], ref.obsm["X_pca"])
        assert (a.obsp["RNA_snn"] != ref.obsp["RNA_snn"]).nnz == 0
        sc.pp.normalize_total(a, target_sum=1e4)  # scanpy computes on it
        sc.pp.log1p(a)
        np.testing.assert_allclose(a.X.toarray(), ref.layers["data"].toarray(), atol=1e-6)
    # and back: h5ad -> rds
    rds = tmp_path / f"{name}.rds"
    assert cli_main(["convert", str(out), str(rds), "--quiet", "--in-process"]) == 0
    same_counts(read_seurat(rds), ref)


def test_cli_command_line(tmp_path):
    src = shared_path("lymphnode_visium.rds")
    out = tmp_path / "v.h5ad"
    cmd = [sys.executable, "-m", "pybridge.cli", "convert", str(src), str(out), "--layer", "data"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    a = ad.read_h5ad(out)
    assert a.uns["pybridge"]["X_layer"] == "data" and a.uns["pybridge"]["assay"] == "Spatial"
    md5 = file_md5(out)
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "already exists" in r.stderr and file_md5(out) == md5
    r = subprocess.run([sys.executable, "-m", "pybridge.cli", "convert", str(src), str(tmp_path / "v.csv")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "one .rds and one .h5ad" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pybridge.cli", "convert", str(src)], capture_output=True, text=True, check=False)
    assert r.returncode == 2


def _children(pid):
    import os

    kids = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return kids


def _start_and_signal(tmp_path, out, sig, extra=(), to_child=False):
    """Start `pybridge convert` (kang_ifnb_processed.rds -> out), send `sig` once its temporary file
    exists beside `out` (the write is under way) to the command (or to its conversion child),
    return (returncode, stderr)."""
    import os
    import time

    cmd = [sys.executable, "-m", "pybridge.cli", "convert", str(shared_path("kang_ifnb_processed.rds")), str(out),
           *extra]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while not any(".pybridge-tmp" in n for n in os.listdir(tmp_path)):
            assert p.poll() is None, f"the conversion ended before its write began: {p.stderr.read()}"
            assert time.monotonic() < deadline, "no temporary file after 300 s"
            time.sleep(0.01)
        if to_child:
            (kid,) = _children(p.pid)
            os.kill(kid, sig)
        else:
            p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


def test_cli_ctrl_c_stops_the_conversion_target_untouched(tmp_path):
    import os
    import signal

    out = tmp_path / "out.h5ad"
    out.write_bytes(b"the user's old file\n")
    rc, err = _start_and_signal(tmp_path, out, signal.SIGINT, ["--overwrite"])
    assert rc == 130, err
    assert "interrupted (SIGINT)" in err and f"{out} untouched" in err
    assert out.read_bytes() == b"the user's old file\n"
    assert os.listdir(tmp_path) == ["out.h5ad"]  # no temporary file left


@pytest.mark.slow  # the same path as Ctrl-C (fast tier) with another signal
def test_cli_sigterm_stops_the_conversion_nothing_written(tmp_path):
    import os
    import signal

    out = tmp_path / "new.h5ad"
    rc, err = _start_and_signal(tmp_path, out, signal.SIGTERM)
    assert rc == 143, err
    assert f"{out} not written" in err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_cli_conversion_child_killed_from_outside(tmp_path):
    import os
    import signal

    out = tmp_path / "out.h5ad"
    out.write_bytes(b"old\n")
    rc, err = _start_and_signal(tmp_path, out, signal.SIGKILL, ["--overwrite"], to_child=True)  # as the OOM killer
    assert rc == 137, err
    assert "conversion process was killed (SIGKILL)" in err and f"{out} untouched" in err
    assert out.read_bytes() == b"old\n" and os.listdir(tmp_path) == ["out.h5ad"]
