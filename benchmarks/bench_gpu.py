#!/usr/bin/env python
"""What a GPU buys: preprocessing, scVI, cell2location and in-silico deletion, GPU vs CPU, one JSON.

One command on a machine with one CUDA GPU (under 8 minutes on an H200 + 16 cores), no
internet needed (the data are the shared real datasets, enlarged by tiling)::

    python benchmarks/bench_gpu.py                       # device "auto": the GPU, compared with the CPU
    python benchmarks/bench_gpu.py --device cpu --small  # the CPU run the test suite makes (~1 min, 2 cores)

Wheels the GPU machine must already have (it has no package index): a CUDA build of torch
(scvi-tools, cell2location and the in-silico encoder run on torch) and ``cupy-cuda12x`` (or the
build matching its CUDA) for pybridge's GPU preprocessing; ``rapids-singlecell`` is optional (it
is used by the graph steps only, which this benchmark does not time). Without cupy the
preprocessing GPU figure is recorded as ``null`` with the reason; everything else still runs.

Measured (each section also records its sizes and the settings used):

1. ``preprocessing``: ``pp.run_chain(steps=normalize, hvg, scale, pca)`` on 200,000 cells x
   13,215 genes (kang_ifnb tiled 100x, counts binomially thinned at 0.9 so that no two cells
   are equal; ``--small``: 4,000 cells) on the GPU and on the CPU, and scanpy's own functions
   (hvg seurat_v3, normalize_total, log1p, scale, pca) on the CPU. Ratios: scanpy / GPU, CPU / GPU.
2. ``scvi``: seconds per epoch of ``tl.integrate_scvi`` on 50,000 cells (kang tiled 25x, 2,000
   variable genes; ``--small``: 2,000 cells): the device's default (the GPU rule of
   ``pybridge._device.scvi_training``), batch 128 with scvi-tools' loader on the same device,
   and the CPU. Median of the epochs after the first (Lightning callback, synchronised).
3. ``cell2location``: steady-state seconds per mapping epoch of ``tl.cell2location`` on 300
   pseudo-spots x the 8,863 reference genes that pass cell2location's filter (``--small``:
   100 spots x 800 genes), ``backend="pybridge"`` vs ``backend="cell2location"`` (the package's
   own loop), on the device and on the CPU, plus the posterior-sampling seconds of each.
4. ``insilico``: ``tl.score_perturbation(method="insilico")`` with a scVI encoder on kang
   (STIM -> CTRL, CD14 Mono): seconds and attempted cell x gene deletions per second.

The JSON (``benchmarks/results/bench_gpu_<device>_<time>.json`` or ``--out``) holds the
hardware (CPU model, cores, torch threads, GPU name and memory), versions (Python, NumPy, torch
+ CUDA, scvi-tools, cell2location, Pyro, scanpy, anndata, Lightning, cupy, rapids-singlecell,
pybridge + git commit), every figure, and the ratios. A section that fails records its error
and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # deconv_truth: pseudo-spots from the reference
DATA = Path(os.environ.get("PYBRIDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"

FULL = {"pp_cells": 200_000, "scvi_cells": 50_000, "scvi_epochs": {"gpu": 6, "b128": 3, "cpu": 3},
        "c2l_spots": 300, "c2l_genes": None, "c2l_epochs": {"gpu": 300, "cpu": 60}, "c2l_samples": 200,
        "insilico": {"epochs": 20, "genes": ["ISG15", "IFIT1", "MX1", "IFI6", "ISG20"], "n_random": 20,
                     "max_cells": 300}}
SMALL = {"pp_cells": 4_000, "scvi_cells": 2_000, "scvi_epochs": {"gpu": 3, "b128": 3, "cpu": 3},
         "c2l_spots": 100, "c2l_genes": 800, "c2l_epochs": {"gpu": 30, "cpu": 30}, "c2l_samples": 50,
         "insilico": {"epochs": 2, "genes": ["ISG15", "IFIT1"], "n_random": 5, "max_cells": 60}}


# ----------------------------------------------------------------------------- context


def _version(mod: str):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "installed")
    except Exception as e:  # not installed or broken: recorded, not fatal
        return f"not available ({type(e).__name__})"


def context(device: str) -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
          "machine": platform.machine(), "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        hw["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except Exception:
        commit = None
    versions = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                "pybridge_commit": commit}
    for m in ("numpy", "scipy", "scvi", "cell2location", "pyro", "scanpy", "anndata", "lightning", "cupy",
              "rapids_singlecell", "pybridge"):
        versions[m] = _version(m)
    return {"hardware": hw, "versions": versions, "device": device}


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _tile(a, n_cells: int, seed: int = 0):
    """``a`` tiled to ``n_cells`` cells, counts binomially thinned (p = 0.9) so no two cells are equal."""
    import anndata as ad
    import scipy.sparse as sp

    reps = int(np.ceil(n_cells / a.n_obs))
    x = sp.vstack([sp.csr_matrix(a.X)] * reps).tocsr()[:n_cells]
    rng = np.random.default_rng(seed)
    x.data = rng.binomial(x.data.astype(np.int64), 0.9).astype(np.float32)
    x.eliminate_zeros()
    obs = a.obs.iloc[np.arange(n_cells) % a.n_obs].reset_index(drop=True)
    obs.index = [f"c{i}" for i in range(n_cells)]
    return ad.AnnData(x, obs=obs, var=a.var[[]].copy())


# ----------------------------------------------------------------------------- sections


def bench_preprocessing(cfg, dev: str) -> dict:
    import anndata as ad
    import scanpy as sc

    from pybridge import pp
    from pybridge._device import resolve_device

    kang = ad.read_h5ad(DATA / "kang_ifnb.h5ad")
    a = _tile(kang, cfg["pp_cells"])
    out = {"cells": a.n_obs, "genes": a.n_vars, "nnz": int(a.X.nnz), "steps": ["normalize", "hvg", "scale", "pca"]}
    steps = ("normalize", "hvg", "scale", "pca")
    devices = ["cpu"]
    gpu_reason = "device cpu: the GPU was not asked for" if dev == "cpu" else None
    if dev != "cpu":
        try:
            resolve_device("cuda", backend="cupy")
            devices.insert(0, "cuda")
        except RuntimeError as e:
            gpu_reason = str(e)
    for d in devices:  # warm-up (cupy kernels, numba), not timed
        pp.run_chain(_tile(kang, 2000, seed=1), steps=steps, device=d, verbose=False)
        t = time.perf_counter()
        res = pp.run_chain(a, steps=steps, device=d, copy=True, verbose=False)
        _sync(d)
        out[f"pybridge_{d}_s"] = time.perf_counter() - t
        del res
    if gpu_reason:
        out["pybridge_cuda_s"], out["gpu_note"] = None, gpu_reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = _tile(kang, 2000, seed=2)
        sc.pp.highly_variable_genes(w, flavor="seurat_v3", n_top_genes=500)  # warm-up
        b = a.copy()
        t = time.perf_counter()
        sc.pp.highly_variable_genes(b, flavor="seurat_v3", n_top_genes=2000)
        sc.pp.normalize_total(b, target_sum=1e4)
        sc.pp.log1p(b)
        sub = b[:, b.var["highly_variable"].to_numpy()].copy()
        sc.pp.scale(sub, max_value=10)
        sc.pp.pca(sub, n_comps=50)
        out["scanpy_cpu_s"] = time.perf_counter() - t
    if out.get("pybridge_cuda_s"):
        out["ratio_scanpy_over_gpu"] = out["scanpy_cpu_s"] / out["pybridge_cuda_s"]
        out["ratio_cpu_over_gpu"] = out["pybridge_cpu_s"] / out["pybridge_cuda_s"]
    out["ratio_scanpy_over_pybridge_cpu"] = out["scanpy_cpu_s"] / out["pybridge_cpu_s"]
    return out


def _epoch_timer():
    import torch
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.ends = []

        def on_train_epoch_start(self, trainer, pl_module):
            if not self.ends:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.ends.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

        def per_epoch(self):
            d = np.diff(self.ends)
            return float(np.median(d[1:])) if len(d) > 1 else float(d[0])

    return EpochTimer()


def bench_scvi(cfg, dev: str) -> dict:
    import anndata as ad

    import pybridge.tl as tl
    from pybridge import pp

    kang = ad.read_h5ad(DATA / "kang_ifnb.h5ad")
    a = _tile(kang, cfg["scvi_cells"])
    hv = pp.variable_genes(a.X, 2000, flavor="seurat_v3", batch=a.obs["stim"].astype(str).to_numpy(),
                           var_names=a.var_names)
    genes = list(a.var_names[np.asarray(hv["highly_variable"], dtype=bool)])
    out = {"cells": a.n_obs, "genes": len(genes), "runs": {}}
    runs = [("default", dev, {}), ("b128", dev, {"batch_size": 128, "data_loading": "anndata"}), ("cpu", "cpu", {})]
    if dev == "cpu":
        runs = [("cpu", "cpu", {})]
    for name, d, kw in runs:
        timer = _epoch_timer()
        epochs = cfg["scvi_epochs"]["gpu" if name == "default" else name]
        b = a.copy()
        t = time.perf_counter()
        tl.integrate_scvi(b, batch_key="stim", genes=genes, max_epochs=epochs, device=d, verbose=False,
                          train_kwargs={"callbacks": [timer]}, **kw)
        p = b.uns["X_scVI"]["params"]
        out["runs"][name] = {"device": d, "s_per_epoch": timer.per_epoch(), "epochs": epochs,
                             "total_s": time.perf_counter() - t, "batch_size": p["batch_size"], "lr": p.get("lr"),
                             "data_loading": p["data_loading"], "rule": p.get("training_rule")}
    r = out["runs"]
    if "default" in r:
        out["ratio_cpu_over_gpu_default"] = r["cpu"]["s_per_epoch"] / r["default"]["s_per_epoch"]
        out["ratio_b128_over_gpu_default"] = r["b128"]["s_per_epoch"] / r["default"]["s_per_epoch"]
    return out


def bench_cell2location(cfg, dev: str) -> dict:
    import anndata as ad
    from deconv_truth import pseudo_spots

    import pybridge.tl as tl
    from pybridge.tl._cell2location import filter_reference_genes
    from pybridge.tl._deconv_common import as_csr_float32, reference_labels
    from pybridge.tl._nnls import mean_signatures

    ref = ad.read_h5ad(DATA / "lymphnode_reference.h5ad")
    x = as_csr_float32(ref.X)
    genes = filter_reference_genes(x, ref.var_names.astype(str))
    if cfg["c2l_genes"]:
        genes = genes[: cfg["c2l_genes"]]
    spatial, half, _truth, ncells = pseudo_spots(ref, "cell_type", genes, n_spots=cfg["c2l_spots"], seed=0)
    sig = mean_signatures(as_csr_float32(half[:, genes].X), reference_labels(half, "cell_type"), genes)
    sig = sig.loc[sig.sum(1) > 0]
    out = {"spots": spatial.n_obs, "genes": int(sig.shape[0]), "cell_types": int(sig.shape[1]),
           "num_samples": cfg["c2l_samples"], "runs": {}}
    devices = ["cpu"] if dev == "cpu" else [dev, "cpu"]
    for d in devices:
        epochs = cfg["c2l_epochs"]["cpu" if d == "cpu" else "gpu"]
        for backend in ("pybridge", "cell2location"):
            s = spatial.copy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = tl.cell2location(s, signatures=sig, max_epochs=epochs, lr=0.002, num_samples=cfg["c2l_samples"],
                                       n_cells_per_location=float(ncells.mean()), device=d, backend=backend,
                                       verbose=False)
            sec = res["seconds"]
            out["runs"][f"{backend}_{'gpu' if d != 'cpu' else 'cpu'}"] = {
                "device": d, "epochs": epochs, "ms_per_epoch": 1000 * sec["training_per_epoch_steady"],
                "training_s": sec["training"], "sampling_s": sec["sampling"],
                "final_loss": float(res["history"]["elbo_train"][-1])}
    r = out["runs"]
    for where in ("gpu", "cpu"):
        if f"pybridge_{where}" in r:
            out[f"ratio_package_over_pybridge_{where}"] = (r[f"cell2location_{where}"]["ms_per_epoch"]
                                                          / r[f"pybridge_{where}"]["ms_per_epoch"])
            out[f"sampling_ratio_package_over_pybridge_{where}"] = (r[f"cell2location_{where}"]["sampling_s"]
                                                                   / r[f"pybridge_{where}"]["sampling_s"])
    return out


def bench_insilico(cfg, dev: str, tmp: Path) -> dict:
    import anndata as ad

    import pybridge.tl as tl

    c = cfg["insilico"]
    kang = ad.read_h5ad(DATA / "kang_ifnb.h5ad")
    model = tmp / "insilico_encoder"
    enc = kang.copy()
    enc.obs["sample"] = "one"  # a one-batch encoder (the integration model would remove the stim effect)
    tl.integrate_scvi(enc, batch_key="sample", n_top_genes=2000, max_epochs=c["epochs"], device=dev,
                      save_path=model, verbose=False, min_cells_per_batch=1)
    n_cells = int(((kang.obs["seurat_annotations"] == "CD14 Mono") & (kang.obs["stim"] == "STIM")).sum())
    n_cells = min(n_cells, c["max_cells"])
    _sync(dev)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = tl.score_perturbation(kang, condition_key="stim", control="CTRL", method="insilico", model=str(model),
                                    genes=c["genes"], cell_type_key="seurat_annotations", groups=["CD14 Mono"],
                                    n_random=c["n_random"], max_cells=c["max_cells"], device=dev)
    _sync(dev)
    sec = time.perf_counter() - t
    attempted = len(c["genes"]) * (1 + c["n_random"]) * n_cells
    return {"genes": c["genes"], "n_random": c["n_random"], "cells": n_cells, "seconds": sec,
            "attempted_cell_gene_deletions": attempted, "deletions_per_s": attempted / sec,
            "rows": int(len(tab)), "note": "attempted = genes x (1 + n_random) x cells (only cells expressing a "
                                           "gene are re-encoded for it)"}


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="'auto' (the GPU when there is one), 'cpu' or 'cuda[:N]'")
    ap.add_argument("--small", action="store_true", help="small sizes (the CPU test run)")
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/bench_gpu_<device>_<time>.json)")
    ap.add_argument("--only", nargs="*", choices=["preprocessing", "scvi", "cell2location", "insilico"],
                    help="run these sections only")
    args = ap.parse_args(argv)
    import logging
    import tempfile

    warnings.filterwarnings("ignore")
    for n in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "pyro", "cell2location"):
        logging.getLogger(n).setLevel(logging.ERROR)
    import pybridge
    from pybridge._device import resolve_device

    pybridge.settings.verbosity = "warning"
    dev = resolve_device(args.device)
    cfg = SMALL if args.small else FULL
    res = {"benchmark": "bench_gpu", "small": bool(args.small), **context(dev), "sections": {}}
    t_all = time.perf_counter()
    sections = args.only or ["preprocessing", "scvi", "cell2location", "insilico"]
    with tempfile.TemporaryDirectory() as td:
        for name in sections:
            t = time.perf_counter()
            print(f"[bench_gpu] {name} on {dev} ...", flush=True)
            try:
                if name == "preprocessing":
                    r = bench_preprocessing(cfg, dev)
                elif name == "scvi":
                    r = bench_scvi(cfg, dev)
                elif name == "cell2location":
                    r = bench_cell2location(cfg, dev)
                else:
                    r = bench_insilico(cfg, dev, Path(td))
            except Exception as e:  # record and go on: one broken section must not hide the others
                r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            r["section_s"] = time.perf_counter() - t
            res["sections"][name] = r
            print(f"[bench_gpu] {name}: {json.dumps({k: v for k, v in r.items() if k != 'traceback'}, default=str)}",
                  flush=True)
    res["total_s"] = time.perf_counter() - t_all
    out = Path(args.out) if args.out else RESULTS / f"bench_gpu_{dev.replace(':', '')}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=float))
    os.replace(tmp, out)
    print(f"[bench_gpu] wrote {out} ({res['total_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
