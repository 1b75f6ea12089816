"""RunSCVI from R vs scvi-tools called directly in Python: same cells, genes, epochs.

Measures the overhead of the bridge (R -> AnnData conversion, input checks, copy of the
training genes, results back into the Seurat object) on top of the scvi-tools work
(batch-aware HVG selection, setup, training, latent). Goal: ratio <= 1.05.

Each repetition runs the direct Python path in this process, then one Rscript that loads
the same data as a Seurat object, imports the engine (not timed, like Python's imports) and
times ``RunSCVI(run.umap = FALSE, verbose = FALSE)`` after a 1-epoch warm-up on 200 cells (the
Python side discards a warm-up run too: numba compilation and lazy imports are not counted). Repetitions are interleaved so machine
load affects both sides alike; medians are compared. Also reports how close the two latent
spaces are (same seed, genes and data).

Usage: python benchmarks/bench_scvi.py [--dataset kang_ifnb] [--epochs 20] [--reps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PYBRIDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
BATCH = {"kang_ifnb": "stim", "pbmc_3tech": "donor"}

R_SCRIPT = r"""
suppressPackageStartupMessages(library(pybridge))
args <- commandArgs(trailingOnly = TRUE)
obj <- readRDS(args[1]); batch <- args[2]; epochs <- as.integer(args[3]); out <- args[4]
invisible(pybridge:::.engine("tl")); invisible(reticulate::import("scvi")); invisible(reticulate::import("scanpy"))
# warm-up (not timed, like the Python side's discarded first run): numba compilation, lazy imports
b <- as.character(obj[[batch, drop = TRUE]]); keep <- unlist(lapply(split(seq_along(b), b), head, 100))
invisible(RunSCVI(obj[, keep], batch = batch, max.epochs = 1, device = "cpu", run.umap = FALSE, verbose = FALSE))
t0 <- proc.time()[["elapsed"]]
obj <- RunSCVI(obj, batch = batch, max.epochs = epochs, device = "cpu", run.umap = FALSE, verbose = FALSE)
t1 <- proc.time()[["elapsed"]]
emb <- SeuratObject::Embeddings(obj, "scvi")
write.csv(emb, paste0(out, ".csv"))
cat(sprintf('{"seconds": %.4f}', t1 - t0), file = out)
"""


def direct_scvi(h5ad: Path, batch: str, epochs: int):
    """What a Python user writes with scvi-tools alone (data already in memory)."""
    import anndata as ad
    import scanpy as sc
    import scvi

    a = ad.read_h5ad(h5ad)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if a.n_vars > 2000:
            sc.pp.highly_variable_genes(a, flavor="seurat_v3", n_top_genes=2000, batch_key=batch)
            b = a[:, a.var["highly_variable"]].copy()
        else:
            b = a.copy()
        scvi.settings.seed = 0
        scvi.model.SCVI.setup_anndata(b, batch_key=batch)
        m = scvi.model.SCVI(b, n_latent=10, n_layers=1, n_hidden=128, gene_likelihood="nb")
        m.train(max_epochs=epochs, accelerator="cpu", devices=1, batch_size=128, enable_progress_bar=False)
        z = m.get_latent_representation()
    return time.perf_counter() - t0, z, list(b.obs_names)


def r_runscvi(rds: Path, batch: str, epochs: int, env: dict):
    with tempfile.TemporaryDirectory() as td:
        script = Path(td) / "bench.R"
        script.write_text(R_SCRIPT)
        out = Path(td) / "res.json"
        subprocess.run(["Rscript", str(script), str(rds), batch, str(epochs), str(out)], check=True, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        sec = json.loads(out.read_text())["seconds"]
        import pandas as pd

        emb = pd.read_csv(str(out) + ".csv", index_col=0)
    return sec, emb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="kang_ifnb", choices=sorted(BATCH))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch/OMP threads on both sides")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    h5ad, rds = DATA / f"{args.dataset}.h5ad", DATA / f"{args.dataset}.rds"
    if not rds.exists():  # kang_ifnb ships as a processed .rds
        rds = DATA / f"{args.dataset}_processed.rds"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    batch = BATCH[args.dataset]
    direct_scvi(h5ad, batch, 1)  # warm-up, not timed (numba compilation, lazy imports)
    py_t, r_t = [], []
    for rep in range(args.reps):
        t, z, cells = direct_scvi(h5ad, batch, args.epochs)
        py_t.append(t)
        s, emb = r_runscvi(rds, batch, args.epochs, env)
        r_t.append(s)
        print(f"rep {rep + 1}: python scvi-tools {t:.2f} s, R RunSCVI {s:.2f} s", flush=True)
    zr = emb.loc[cells].to_numpy() if set(cells) <= set(emb.index) else None
    py_med, r_med = float(np.median(py_t)), float(np.median(r_t))
    print(f"dataset {args.dataset}, {len(cells)} cells, {args.epochs} epochs, {args.threads} thread(s), "
          f"{args.reps} interleaved reps")
    print(f"median python (scvi-tools direct): {py_med:.2f} s; median R RunSCVI: {r_med:.2f} s")
    print(f"overhead ratio R/Python = {r_med / py_med:.3f} (goal <= 1.05); "
          f"min-based ratio = {min(r_t) / min(py_t):.3f}")
    if zr is not None:
        print(f"latent agreement (same seed, genes, data): max |diff| = {np.abs(zr - z).max():.2e}")


if __name__ == "__main__":
    sys.exit(main())
