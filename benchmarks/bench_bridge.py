"""Seurat -> AnnData (X + obs): pybridge (reticulate, zero-copy) vs anndata2ri (rpy2) vs an h5ad
round trip (R writes h5ad, anndata reads it).

Each contender runs in its own process on the same generated object (benchmarks/_gen_seurat.R,
same seed): wall time of the conversion alone and the extra peak RSS it needs, relative to the
matrix's bytes (12 bytes per non-zero + 4 per column). Prints ratios.
Issue #2 targets: >= 50x faster than anndata2ri; extra peak memory <= 5% of the matrix.

    python benchmarks/bench_bridge.py --cells 200000 --genes 20000 --nnz-per-cell 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GEN = HERE / "_gen_seurat.R"

R_PYBRIDGE = r"""
suppressMessages({library(Matrix); library(SeuratObject); library(pybridge)})
source("%(gen)s")
m <- gen_counts(%(n)d, %(g)d, %(k)d); md <- gen_meta(%(n)d)
obj <- suppressWarnings(CreateSeuratObject(m, meta.data = md))
invisible(pybridge:::.engine("io")) ; reticulate::import("anndata")  # start Python before timing
gc(); base <- rss_bytes(); reset_peak()
t0 <- proc.time()[["elapsed"]]
ad <- as.AnnData(obj, verbose = FALSE)
el <- proc.time()[["elapsed"]] - t0
peak <- rss_bytes("VmHWM")
stopifnot(reticulate::py_to_r(ad$X$nnz) == length(m@x))
cat(sprintf('{"seconds": %%f, "extra_peak": %%f, "matrix_bytes": %%f}\n', el, peak - base,
            12 * length(m@x) + 4 * (ncol(m) + 1)))
"""

PY_ANNDATA2RI = r"""
import json, time, resource, sys
import rpy2.robjects as ro
from rpy2.robjects import default_converter, pandas2ri
import anndata2ri, anndata as ad
ro.r('suppressMessages({library(Matrix); library(SeuratObject)})')
ro.r('source("%(gen)s")')
ro.r('m <- gen_counts(%(n)d, %(g)d, %(k)d); md <- gen_meta(%(n)d)')
ro.r('obj <- suppressWarnings(CreateSeuratObject(m, meta.data = md)); gc()')
def rss(field):
    for l in open('/proc/self/status'):
        if l.startswith(field + ':'):
            return float(l.split()[1]) * 1024
base = rss('VmRSS'); open('/proc/self/clear_refs', 'w').write('5')
t0 = time.perf_counter()
with (default_converter + anndata2ri.converter).context():
    X = ro.r('GetAssayData(obj, "counts")')
with (default_converter + pandas2ri.converter).context():
    obs = ro.r('obj@meta.data')
a = ad.AnnData(X=X.T.tocsr(), obs=obs)
el = time.perf_counter() - t0
assert a.X.nnz == %(n)d * %(k)d
print(json.dumps({"seconds": el, "extra_peak": rss('VmHWM') - base}))
"""

R_WRITE_H5AD = r"""
suppressMessages({library(Matrix); library(SeuratObject); library(pybridge)})
source("%(gen)s")
m <- gen_counts(%(n)d, %(g)d, %(k)d); md <- gen_meta(%(n)d)
obj <- suppressWarnings(CreateSeuratObject(m, meta.data = md))
t0 <- proc.time()[["elapsed"]]
WriteH5AD(obj, "%(path)s", overwrite = TRUE, verbose = FALSE)
cat(sprintf('{"seconds": %%f}\n', proc.time()[["elapsed"]] - t0))
"""

PY_READ_H5AD = r"""
import json, time, anndata as ad
t0 = time.perf_counter(); a = ad.read_h5ad("%(path)s"); el = time.perf_counter() - t0
print(json.dumps({"seconds": el}))
"""


def _run(cmd, code):
    out = subprocess.run(cmd + [code], capture_output=True, text=True, env={**os.environ})
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=200_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--nnz-per-cell", type=int, default=1000)
    ap.add_argument("--skip-h5ad", action="store_true")
    args = ap.parse_args(argv)
    fmt = {"gen": str(GEN), "n": args.cells, "g": args.genes, "k": args.nnz_per_cell}
    print(f"object: {args.cells:,} cells x {args.genes:,} genes, {args.cells * args.nnz_per_cell:,} non-zeros")
    pb = _run(["Rscript", "-e"], R_PYBRIDGE % fmt)
    a2 = _run([sys.executable, "-c"], PY_ANNDATA2RI % fmt)
    mb = pb["matrix_bytes"]
    print(f"pybridge as.AnnData : {pb['seconds']:8.3f} s, extra peak {pb['extra_peak'] / 2**20:9.1f} MiB "
          f"({100 * pb['extra_peak'] / mb:.2f}% of the matrix's {mb / 2**30:.2f} GiB)")
    print(f"anndata2ri (rpy2)   : {a2['seconds']:8.3f} s, extra peak {a2['extra_peak'] / 2**20:9.1f} MiB "
          f"({100 * a2['extra_peak'] / mb:.1f}%)")
    print(f"speed-up vs anndata2ri: {a2['seconds'] / pb['seconds']:.1f}x (target >= 50x)")
    if not args.skip_h5ad:
        with tempfile.TemporaryDirectory() as d:
            path = str(Path(d) / "bench.h5ad")
            w = _run(["Rscript", "-e"], R_WRITE_H5AD % {**fmt, "path": path})
            r = _run([sys.executable, "-c"], PY_READ_H5AD % {"path": path})
        tot = w["seconds"] + r["seconds"]
        print(f"h5ad round trip     : {tot:8.3f} s (R WriteH5AD {w['seconds']:.2f} s + anndata read {r['seconds']:.2f} s)")
        print(f"speed-up vs h5ad round trip: {tot / pb['seconds']:.1f}x")


if __name__ == "__main__":
    main()
