#!/usr/bin/env python
"""Benchmark: Seurat's standard chain on a generated count matrix, three (four) ways.

normalise -> variable genes (vst, 2,000) -> scale -> PCA (50) -> kNN/SNN graph (dims 1:30)
-> UMAP -> clusters (resolution 0.8), run by

- ``pybridge``   : ``pybridge.pp.run_chain(adata, device=...)`` (CPU: numpy/scipy; ``--device cuda``: cupy)
- ``scanpy``     : scanpy's own functions on the CPU (hvg seurat_v3, normalize_total, log1p,
                   scale, pca, neighbors, umap, leiden)
- ``seurat``     : Seurat's own functions in R (NormalizeData ... FindClusters), via Rscript
- ``pybridge-R`` : (``--with-r-bridge``) ``pybridge::RunPreprocess()`` from R: the Seurat user's
                   path, including the zero-copy hand-over and the results written back

Each runs in its own process, so wall time (of the chain only: loading the matrix is excluded)
and peak resident memory (VmHWM, which includes the loaded input) are measured separately.
Ratios are printed against pybridge (``> 1`` means pybridge is faster / smaller).

The matrix: ``--cells`` x ``--genes`` counts from a multinomial model with 12 cell types and
sub-states (gene programmes drawn from a log-normal / Zipf-like baseline), about 2,500 UMIs per
cell, written once to an HDF5 file (CSR of cells x genes = the dgCMatrix of genes x cells).

Usage::

    python benchmarks/bench_preprocess.py                      # 100k cells x 20k genes
    python benchmarks/bench_preprocess.py --cells 20000        # smaller
    python benchmarks/bench_preprocess.py --device cuda        # on a GPU machine (goal: >= 10x scanpy CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def make_counts(n_cells: int, n_genes: int, *, seed: int = 0, n_types: int = 12, umis: float = 2500.0):
    """CSR (cells x genes, float32 counts) from a multinomial model with cell types and sub-states."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    base = rng.lognormal(mean=0.0, sigma=1.6, size=n_genes)
    base /= base.sum()
    types = []
    for _ in range(n_types):
        fc = np.ones(n_genes)
        markers = rng.choice(n_genes, size=max(20, n_genes // 50), replace=False)
        fc[markers] = rng.lognormal(1.5, 0.7, size=markers.size)
        p = base * fc * rng.lognormal(0, 0.2, size=n_genes)
        types.append(p / p.sum())
    cell_type = rng.integers(0, n_types, size=n_cells)
    lib = np.maximum(200, rng.lognormal(np.log(umis), 0.45, size=n_cells)).astype(np.int64)
    blocks = []
    block = 2000
    for start in range(0, n_cells, block):
        stop = min(n_cells, start + block)
        rows, cols = [], []
        for t in np.unique(cell_type[start:stop]):
            idx = np.flatnonzero(cell_type[start:stop] == t)
            p = types[t] * rng.gamma(4.0, 0.25, size=n_genes)  # sub-state: overdispersion per block
            p /= p.sum()
            draws = rng.choice(n_genes, size=int(lib[start + idx].sum()), p=p)
            rows.append(np.repeat(idx, lib[start + idx]))
            cols.append(draws)
        r, c = np.concatenate(rows), np.concatenate(cols)
        m = sp.csr_matrix((np.ones(r.size, dtype=np.float32), (r, c)), shape=(stop - start, n_genes))
        m.sum_duplicates()
        blocks.append(m)
    return sp.vstack(blocks, format="csr"), cell_type


def data_file(n_cells: int, n_genes: int, seed: int, cache: Path) -> Path:
    import h5py

    cache.mkdir(parents=True, exist_ok=True)
    f = cache / f"counts_{n_cells}x{n_genes}_s{seed}.h5"
    if f.exists():
        return f
    t = time.perf_counter()
    x, ct = make_counts(n_cells, n_genes, seed=seed)
    tmp = f.with_suffix(".tmp")
    with h5py.File(tmp, "w") as h:
        h["data"], h["indices"], h["indptr"] = x.data, x.indices.astype(np.int32), x.indptr.astype(np.int32)
        h["shape"] = np.array(x.shape, dtype=np.int64)
        h["cell_type"] = ct
    tmp.rename(f)
    print(f"generated {n_cells:,} x {n_genes:,} counts ({x.nnz:,} non-zeros, "
          f"{x.nnz / n_cells:.0f} genes/cell) in {time.perf_counter() - t:.0f}s -> {f}", flush=True)
    return f


# ------------------------------------------------------------------------------------------------
# the runs (each in its own process)
# ------------------------------------------------------------------------------------------------
PY_COMMON = r'''
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np, scipy.sparse as sp, h5py, anndata as ad, pandas as pd

def vmhwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def load(path):
    with h5py.File(path) as h:
        shape = tuple(h["shape"][()])
        x = sp.csr_matrix((h["data"][()], h["indices"][()], h["indptr"][()]), shape=shape)
        ct = h["cell_type"][()]
    a = ad.AnnData(x)
    a.obs_names = [f"c{i}" for i in range(shape[0])]
    a.var_names = [f"g{j}" for j in range(shape[1])]
    a.obs["cell_type"] = pd.Categorical(ct.astype(str))
    return a

def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

import resource

def warm_up():
    """Compile numba code (pynndescent, umap, scanpy kernels) on small data, outside the timing."""
    import scanpy as sc
    from pybridge.pp._neighbors import _nndescent_transformer
    rng = np.random.default_rng(0)
    w = ad.AnnData(rng.normal(size=(9000, 30)).astype(np.float32))
    w.obsm["X_pca"] = w.X
    sc.pp.neighbors(w, n_neighbors=20, use_rep="X_pca", transformer=_nndescent_transformer(9000, 20, "euclidean", 0))
    sc.tl.umap(w, maxiter=5)
    c = ad.AnnData(sp.random(500, 300, density=0.1, format="csr", dtype=np.float32, random_state=0))
    c.X.data[:] = np.round(c.X.data * 10) + 1
    sc.pp.highly_variable_genes(c, flavor="seurat_v3", n_top_genes=50)
    sc.pp.normalize_total(c); sc.pp.log1p(c); sc.pp.scale(c)

if "--warm" in sys.argv:
    warm_up()
adata = load(sys.argv[1])
base = vmhwm()
cpu0 = cpu_s()
steps = {}
'''

PY_PYBRIDGE = PY_COMMON + r'''
import pybridge.pp as pp
device = sys.argv[2]
t = time.perf_counter()
pp.run_chain(adata, device=device, n_top_genes=2000, n_comps=50, n_pcs=30, n_neighbors=20, resolution=0.8)
wall = time.perf_counter() - t
steps = {k: v for k, v in adata.uns["preprocess"]["seconds"].items() if k != "total"}
labels = adata.obs["leiden"].astype(str).to_numpy()
print("RESULT " + json.dumps(dict(wall=wall, cpu=cpu_s() - cpu0, peak_mb=vmhwm(), input_mb=base, steps=steps,
      n_clusters=int(len(set(labels))), device=adata.uns["preprocess"]["device"], labels=labels.tolist())))
'''

PY_SCANPY = PY_COMMON + r'''
import scanpy as sc
def tick(name, t0):
    steps[name] = time.perf_counter() - t0
t = t0 = time.perf_counter()
sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=2000); tick("hvg", t0)
t0 = time.perf_counter(); sc.pp.normalize_total(adata, target_sum=1e4); sc.pp.log1p(adata); tick("normalize", t0)
t0 = time.perf_counter()
sub = adata[:, adata.var["highly_variable"].to_numpy()].copy()
sc.pp.scale(sub, max_value=10); tick("scale", t0)
t0 = time.perf_counter(); sc.pp.pca(sub, n_comps=50); tick("pca", t0)
# scanpy's own default kNN search; pynndescent's output is made a csr_matrix only because scanpy
# 1.11 + scipy >= 1.15 + pynndescent >= 0.6 fail otherwise (see pybridge.pp._neighbors)
from pybridge.pp._neighbors import _nndescent_transformer, _scanpy_uses_nndescent
kw = {"transformer": _nndescent_transformer(sub.n_obs, 20, "euclidean", 0)} if _scanpy_uses_nndescent(sub.n_obs, "euclidean") else {}
t0 = time.perf_counter(); sc.pp.neighbors(sub, n_neighbors=20, n_pcs=30, **kw); tick("neighbors", t0)
t0 = time.perf_counter(); sc.tl.umap(sub, min_dist=0.3); tick("umap", t0)
t0 = time.perf_counter()
sc.tl.leiden(sub, resolution=0.8, flavor="igraph", n_iterations=-1, directed=False); tick("clusters", t0)
wall = time.perf_counter() - t
labels = sub.obs["leiden"].astype(str).to_numpy()
print("RESULT " + json.dumps(dict(wall=wall, cpu=cpu_s() - cpu0, peak_mb=vmhwm(), input_mb=base, steps=steps,
      n_clusters=int(len(set(labels))), device="cpu", labels=labels.tolist())))
'''

R_COMMON = r'''
suppressPackageStartupMessages({library(Seurat); library(Matrix); library(hdf5r)})
vmhwm <- function() {
  l <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
  as.numeric(strsplit(trimws(sub("VmHWM:", "", l)), " +")[[1]][1]) / 1024
}
args <- commandArgs(trailingOnly = TRUE)
h <- H5File$new(args[1], mode = "r")
shape <- h[["shape"]][]
m <- new("dgCMatrix", x = as.double(h[["data"]][]), i = as.integer(h[["indices"]][]),
         p = as.integer(h[["indptr"]][]), Dim = as.integer(c(shape[2], shape[1])))
h$close_all()
dimnames(m) <- list(paste0("g", seq_len(shape[2]) - 1L), paste0("c", seq_len(shape[1]) - 1L))
obj <- CreateSeuratObject(m, min.cells = 0, min.features = 0)
rm(m); invisible(gc())
base <- vmhwm()
cpu_s <- function() { p <- proc.time(); sum(p[c(1, 2, 4, 5)], na.rm = TRUE) }
cpu0 <- cpu_s()
steps <- list()
json_out <- function(wall, device, labels) {
  s <- paste(sprintf('"%s": %.4f', names(steps), unlist(steps)), collapse = ", ")
  lab <- paste(sprintf('"%s"', as.character(labels)), collapse = ",")
  cat(sprintf('RESULT {"wall": %.4f, "cpu": %.4f, "peak_mb": %.1f, "input_mb": %.1f, "steps": {%s}, "n_clusters": %d, "device": "%s", "labels": [%s]}\n',
              wall, cpu_s() - cpu0, vmhwm(), base, s, nlevels(factor(labels)), device, lab))
}
'''

R_SEURAT = R_COMMON + r'''
tick <- function(name, expr) {
  t0 <- Sys.time(); force(expr); steps[[name]] <<- as.numeric(difftime(Sys.time(), t0, units = "secs"))
}
t <- Sys.time()
tick("normalize", obj <- NormalizeData(obj, verbose = FALSE))
tick("hvg", obj <- FindVariableFeatures(obj, selection.method = "vst", nfeatures = 2000, verbose = FALSE))
tick("scale", obj <- ScaleData(obj, verbose = FALSE))
tick("pca", obj <- RunPCA(obj, npcs = 50, verbose = FALSE))
tick("neighbors", obj <- FindNeighbors(obj, dims = 1:30, verbose = FALSE))
tick("umap", obj <- suppressWarnings(RunUMAP(obj, dims = 1:30, verbose = FALSE)))
tick("clusters", obj <- FindClusters(obj, resolution = 0.8, verbose = FALSE))
wall <- as.numeric(difftime(Sys.time(), t, units = "secs"))
json_out(wall, "cpu", obj$seurat_clusters)
'''

R_BRIDGE = R_COMMON + r'''
suppressPackageStartupMessages(library(pybridge))
invisible(pybridge_available())
t <- Sys.time()
obj <- RunPreprocess(obj, device = args[2], verbose = FALSE)
wall <- as.numeric(difftime(Sys.time(), t, units = "secs"))
s <- Misc(obj, "pybridge_preprocess")$seconds
steps <- as.list(s[names(s) != "total"])
steps$r_side <- wall - s[["total"]]
json_out(wall, Misc(obj, "pybridge_preprocess")$device, obj$seurat_clusters)
'''


def _run(cmd: list[str], label: str, timeout: float) -> dict | None:
    print(f"-- {label}: {' '.join(cmd[:2])} ...", flush=True)
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        print(f"   {label}: timed out after {timeout:.0f}s", flush=True)
        return None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        print(f"   {label} failed (exit {p.returncode}):\n{textwrap.indent((p.stdout + p.stderr)[-3000:], '   ')}")
        return None
    res = json.loads(lines[-1][len("RESULT "):])
    res["process_s"] = time.perf_counter() - t
    print(f"   {label}: chain {res['wall']:.1f}s wall, {res['cpu']:.1f}s CPU, peak RSS {res['peak_mb']:.0f} MB "
          f"(input loaded: {res['input_mb']:.0f} MB), {res['n_clusters']} clusters", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=20_000)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="device of the pybridge run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["pybridge", "scanpy", "seurat"],
                    help="runs to leave out")
    ap.add_argument("--with-r-bridge", action="store_true", help="also time pybridge::RunPreprocess() from R")
    ap.add_argument("--warm", action="store_true",
                    help="compile the numba code of the Python runs (pynndescent, umap) on small data before "
                         "timing: the steady state of a long session; without it, that one-off compilation "
                         "(tens of seconds) is in the timings")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "pybridge_bench"))
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)

    path = data_file(args.cells, args.genes, args.seed, Path(args.cache))
    py = sys.executable
    runs: dict[str, dict | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        scripts = {}
        for name, code in (("run_pybridge.py", PY_PYBRIDGE), ("run_scanpy.py", PY_SCANPY), ("run_seurat.R", R_SEURAT),
                           ("run_bridge.R", R_BRIDGE)):
            scripts[name] = os.path.join(tmp, name)
            Path(scripts[name]).write_text(code)
        if "pybridge" not in args.skip:
            warm = ["--warm"] if args.warm else []
            runs[f"pybridge ({args.device})"] = _run([py, scripts["run_pybridge.py"], str(path), args.device] + warm,
                                                     f"pybridge ({args.device})", args.timeout)
        if "scanpy" not in args.skip:
            runs["scanpy (cpu)"] = _run([py, scripts["run_scanpy.py"], str(path)] + (["--warm"] if args.warm else []),
                                        "scanpy (cpu)", args.timeout)
        if "seurat" not in args.skip:
            runs["Seurat (cpu)"] = _run(["Rscript", scripts["run_seurat.R"], str(path)], "Seurat (cpu)", args.timeout)
        if args.with_r_bridge:
            runs[f"RunPreprocess ({args.device})"] = _run(["Rscript", scripts["run_bridge.R"], str(path), args.device],
                                                          f"RunPreprocess ({args.device})", args.timeout)

    report(runs, args, path)


def report(runs: dict, args, path: Path) -> None:
    import h5py
    from sklearn.metrics import adjusted_rand_score

    with h5py.File(path) as h:
        truth = h["cell_type"][()]
    ok = {k: v for k, v in runs.items() if v}
    print(f"\n== {args.cells:,} cells x {args.genes:,} genes; {os.cpu_count()} CPU cores; "
          f"pybridge device={args.device}; numba {'warmed up (not timed)' if args.warm else 'compiled inside the timings'} ==")
    order = ["normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters"]
    print("(chain s: wall seconds of the chain; cpu s: CPU seconds, user + system, all threads: less\n"
          " sensitive than wall time to other work on a shared machine; ARI: clusters vs the generated\n"
          " cell types; steps: wall seconds)")
    hdr = (f"{'run':<24}{'chain s':>9}{'cpu s':>8}{'peak MB':>9}{'ARI':>6}  "
           + " ".join(f"{s[:6]:>7}" for s in order))
    print(hdr)
    for k, v in ok.items():
        v["ari_truth"] = float(adjusted_rand_score(truth, v["labels"]))
        st = " ".join(f"{v['steps'].get(s, float('nan')):7.1f}" for s in order)
        print(f"{k:<24}{v['wall']:9.1f}{v['cpu']:8.1f}{v['peak_mb']:9.0f}{v['ari_truth']:6.2f}  {st}")
    ref_key = next((k for k in ok if k.startswith("pybridge")), None)
    if ref_key:
        ref = ok[ref_key]
        print(f"\nratios vs {ref_key} (time: other / pybridge, > 1 = pybridge faster; memory: peak RSS other / pybridge):")
        for k, v in ok.items():
            if k == ref_key:
                continue
            print(f"  {k:<24} wall x{v['wall'] / ref['wall']:.2f}   CPU x{v['cpu'] / ref['cpu']:.2f}"
                  f"   peak memory x{v['peak_mb'] / ref['peak_mb']:.2f}"
                  f"   ARI(clusters, {ref_key}) = {adjusted_rand_score(ref['labels'], v['labels']):.3f}")
    if args.out:
        slim = {k: ({kk: vv for kk, vv in v.items() if kk != "labels"} if v else None) for k, v in runs.items()}
        Path(args.out).write_text(json.dumps(dict(cells=args.cells, genes=args.genes, device=args.device,
                                                  runs=slim), indent=2))


if __name__ == "__main__":
    main()
