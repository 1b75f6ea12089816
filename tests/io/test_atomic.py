"""Atomic file writing (pybridge/io/_atomic.py)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from filehelpers import file_md5

from pybridge.io import atomic_path, write_h5ad_atomic


def test_atomic_path_and_write_h5ad_atomic(tmp_path):
    target = tmp_path / "x.h5ad"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    a = ad.AnnData(X=np.eye(3, dtype=np.float32))
    write_h5ad_atomic(a, target)
    md5 = file_md5(target)
    with pytest.raises(FileExistsError):
        write_h5ad_atomic(a, target)
    with pytest.raises(ValueError, match="disk full"), atomic_path(target, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("disk full")
    assert file_md5(target) == md5 and sorted(p.name for p in tmp_path.iterdir()) == ["x.h5ad"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_h5ad_atomic(a, tmp_path / "missing" / "x.h5ad")


import errno
import os
import subprocess
import sys
import time

from pybridge.io._atomic import clean_stale_tmp


def _mount(path, *opts):
    """Mount on `path` (tmpfs with a size, or a read-only bind); skip where mount is not permitted."""
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", *opts, str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("mount is not permitted here (needs root): the full-disk / read-only cases cannot run")
    return path


def test_full_disk_read_only_and_directory_targets_say_which(tmp_path):
    small = ad.AnnData(X=np.ones((5, 4), dtype=np.float32))
    big = ad.AnnData(X=np.random.default_rng(0).random((2000, 1000)))  # 16 MB
    disk = _mount(tmp_path / "disk", "-t", "tmpfs", "-o", "size=4m", "tmpfs")
    try:
        write_h5ad_atomic(small, disk / "x.h5ad")
        md5 = file_md5(disk / "x.h5ad")
        # checked before writing (h5py would crash the interpreter when the disk fills mid-write)
        with pytest.raises(OSError, match=r"is full \(No space left on device.*the existing file is untouched") as e:
            write_h5ad_atomic(big, disk / "x.h5ad", overwrite=True)
        assert e.value.errno == errno.ENOSPC
        assert file_md5(disk / "x.h5ad") == md5 and sorted(os.listdir(disk)) == ["x.h5ad"]
        # a write that fills the disk anyway (the estimate passed) gives the same words
        with pytest.raises(OSError, match="is full"), atomic_path(disk / "y.bin") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"\0" * (8 << 20))
        assert sorted(os.listdir(disk)) == ["x.h5ad"]
    finally:
        subprocess.run(["umount", str(disk)])
    ro = tmp_path / "ro"
    ro.mkdir()
    write_h5ad_atomic(small, ro / "x.h5ad")
    md5 = file_md5(ro / "x.h5ad")
    _mount(ro, "--bind", str(ro))
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(OSError, match="is on a read-only file system; the existing file is untouched"):
            write_h5ad_atomic(small, ro / "x.h5ad", overwrite=True)
        assert file_md5(ro / "x.h5ad") == md5
    finally:
        subprocess.run(["umount", str(ro)])
    with pytest.raises(IsADirectoryError, match="is a directory; give the path of a file"):
        write_h5ad_atomic(small, tmp_path)


def test_killed_write_leaves_a_recognisable_file_that_the_next_write_removes(tmp_path):
    code = (
        "import os, numpy as np, anndata as ad; from pybridge.io import write_h5ad_atomic\n"
        f"a = ad.AnnData(X=np.random.default_rng(0).random((20000, 2000)))\n"
        f"open(r'{tmp_path}/pid', 'w').write(str(os.getpid()))\n"
        f"while True: write_h5ad_atomic(a, r'{tmp_path}/big.h5ad', overwrite=True)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    try:
        deadline = time.time() + 120
        tmp = []
        while not tmp and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
            tmp = [n for n in os.listdir(tmp_path) if ".pybridge-tmp-" in n]
        assert len(tmp) == 1
        time.sleep(0.2)
        p.kill()  # SIGKILL: no cleanup runs
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    pid = int((tmp_path / "pid").read_text())
    assert tmp[0].startswith(".big.pybridge-tmp-") and f"-{pid}-" in tmp[0] and tmp[0] in os.listdir(tmp_path)
    # a live process's file (pid 1) is left alone; the killed one's is removed by the next write
    live = tmp_path / tmp[0].replace(f"-{pid}-", "-1-")
    live.touch()
    write_h5ad_atomic(ad.AnnData(X=np.eye(2, dtype=np.float32)), tmp_path / "other.h5ad")
    names = os.listdir(tmp_path)
    assert tmp[0] not in names and live.name in names
    assert clean_stale_tmp(tmp_path) == []
