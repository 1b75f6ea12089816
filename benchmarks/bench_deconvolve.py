"""Benchmark: pybridge.tl.deconvolve vs calling cell2location directly; NNLS; ground truth.

Prints
- overhead ratio: pybridge's cell2location run (reference fit + mapping + results written)
  / the same steps called directly with the cell2location package (tutorial code), same data,
  same epochs, same posterior samples (goal <= 1.05);
- seconds per 1,000 training epochs of the spatial mapping on this machine (CPU unless a GPU
  is visible), wall and process CPU time;
- NNLS time on the same data;
- ground truth: Pearson r / RMSE of cell proportions on pseudo-spots (sums of known cells from
  one half of the reference, deconvolved with the other half) for cell2location and NNLS.

- backends (``--backend-run`` / ``--backend-report``): pybridge's driver of cell2location's
  mapping model (``backend="pybridge"``: JIT-traced ELBO, one fused Adam, no per-step sync,
  vectorised posterior draws) vs the package's own ``train`` + ``sample_posterior``
  (``backend="cell2location"``), same signatures (a RegressionModel fit), same epochs: seconds
  per training epoch, posterior-sampling seconds, q05 agreement between runs (the package vs
  itself with another seed is the noise floor), and ground truth on pseudo-spots for both.

Usage (from the repository root)::

    python benchmarks/bench_deconvolve.py                      # reduced size (a few minutes CPU)
    python benchmarks/bench_deconvolve.py --epochs 30000       # cell2location's recommendation
    # backends, one run per process (each a few minutes on 2 CPU cores), then the report:
    python benchmarks/bench_deconvolve.py --backend-run cell2location --seed 0 --out /tmp/c2l
    python benchmarks/bench_deconvolve.py --backend-run pybridge --seed 0 --out /tmp/c2l
    python benchmarks/bench_deconvolve.py --backend-report /tmp/c2l

Data: ../shared/data lymphnode_reference (330 cells, 11 types) + lymphnode_visium (1,000 spots),
or PYBRIDGE_SHARED_DATA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _timer():
    return time.perf_counter(), time.process_time()


def _since(t):
    return time.perf_counter() - t[0], time.process_time() - t[1]


def direct_cell2location(ref, vis, *, ref_epochs, epochs, num_samples, lr, seed=0):
    """The cell2location tutorial's steps, called directly (no pybridge)."""
    import matplotlib

    matplotlib.use("Agg")
    import pyro
    from cell2location.models import Cell2location, RegressionModel
    from cell2location.utils.filtering import filter_genes

    pyro.set_rng_seed(seed)
    t = _timer()
    adata_ref = ref.copy()
    selected = filter_genes(adata_ref, cell_count_cutoff=5, cell_percentage_cutoff2=0.03, nonz_mean_cutoff=1.12)
    adata_ref = adata_ref[:, selected].copy()
    RegressionModel.setup_anndata(adata=adata_ref, labels_key="cell_type")
    mod = RegressionModel(adata_ref)
    mod.train(max_epochs=ref_epochs, accelerator="cpu", enable_progress_bar=False)
    adata_ref = mod.export_posterior(adata_ref, sample_kwargs={"num_samples": num_samples, "batch_size": 2500,
                                                               "accelerator": "cpu"})
    names = adata_ref.uns["mod"]["factor_names"]
    inf_aver = adata_ref.varm["means_per_cluster_mu_fg"][[f"means_per_cluster_mu_fg_{i}" for i in names]].copy()
    inf_aver.columns = names
    adata_vis = vis.copy()
    intersect = np.intersect1d(adata_vis.var_names, inf_aver.index)
    adata_vis = adata_vis[:, intersect].copy()
    inf_aver = inf_aver.loc[intersect, :].copy()
    Cell2location.setup_anndata(adata=adata_vis)
    mod = Cell2location(adata_vis, cell_state_df=inf_aver, N_cells_per_location=30, detection_alpha=20)
    tt = _timer()
    mod.train(max_epochs=epochs, batch_size=None, train_size=1, lr=lr, accelerator="cpu", enable_progress_bar=False)
    train = _since(tt)
    adata_vis = mod.export_posterior(adata_vis, sample_kwargs={"num_samples": num_samples,
                                                               "batch_size": mod.adata.n_obs, "accelerator": "cpu"})
    return _since(t), train, adata_vis.obsm["q05_cell_abundance_w_sf"]


def pybridge_cell2location(ref, vis, *, ref_epochs, epochs, num_samples, lr, seed=0, reference_genes="all",
                           backend="cell2location"):
    """The same steps through pybridge; ``backend="cell2location"`` (the package's own training and
    sampling) isolates the bridge's overhead; the faster driver is compared in ``backend_run``."""
    from pybridge.tl import deconvolve

    r, v = ref.copy(), vis.copy()
    t = _timer()
    out = deconvolve(v, r, labels_key="cell_type", reference_max_epochs=ref_epochs, max_epochs=epochs,
                     num_samples=num_samples, lr=lr, device="cpu", random_state=seed,
                     reference_genes=reference_genes, backend=backend)
    return _since(t), out, v.obsm["cell2location_q05"]


def ground_truth(ref, genes, *, epochs, ref_epochs, lr, n_spots, num_samples, seed=0, depth=1.0):
    from deconv_truth import pseudo_spots, score

    from pybridge.tl import deconvolve

    spatial, half, truth, ncells = pseudo_spots(ref, "cell_type", genes, n_spots=n_spots, seed=seed, depth=depth)
    res = {"genes": len(genes), "spots": n_spots, "mean_cells_per_spot": float(ncells.mean()),
           "mean_counts_per_spot": float(spatial.X.sum(1).mean())}
    s = spatial.copy()
    t = _timer()
    deconvolve(s, half, labels_key="cell_type", method="nnls", n_cells_per_location=float(ncells.mean()))
    res["nnls"] = dict(zip(("r", "rmse"), score(s.obsm["nnls_proportions"], truth)))
    res["nnls"]["seconds"] = _since(t)[0]
    s = spatial.copy()
    t = _timer()
    deconvolve(s, half, labels_key="cell_type", n_cells_per_location=float(ncells.mean()),
               reference_max_epochs=ref_epochs, max_epochs=epochs, lr=lr, num_samples=num_samples,
               reference_genes="shared", device="cpu",
               model_kwargs={"A_factors_per_location": 3, "B_groups_per_location": 3})
    res["cell2location"] = dict(zip(("r", "rmse"), score(s.obsm["cell2location_proportions"], truth)))
    res["cell2location"]["seconds"] = _since(t)[0]
    return res


def _signatures(ref, vis, cache: Path):
    """cell2location RegressionModel signatures (250 epochs, genes shared with the panel), cached."""
    import pandas as pd

    from pybridge.tl import cell2location

    f = cache / "signatures.csv"
    if f.exists():
        return pd.read_csv(f, index_col=0)
    v = vis.copy()
    out = cell2location(v, ref.copy(), labels_key="cell_type", reference_genes="shared", reference_max_epochs=250,
                        max_epochs=1, num_samples=200, device="cpu", verbose=False)
    cache.mkdir(parents=True, exist_ok=True)
    out["signatures"].to_csv(f)
    return out["signatures"]


def backend_run(ref, vis, *, backend, seed, epochs, lr, num_samples, out: Path, truth_epochs):
    """One run of each: the Visium mapping (timed) and the ground-truth pseudo-spots, one backend."""
    from deconv_truth import score, truth_data

    from pybridge.tl import cell2location

    sig = _signatures(ref, vis, out)
    v = vis.copy()
    res = cell2location(v, signatures=sig, max_epochs=epochs, lr=lr, num_samples=num_samples, device="cpu",
                        backend=backend, random_state=seed, verbose=False)
    s = res["seconds"]
    row = {"backend": backend, "seed": seed, "epochs": epochs, "lr": lr, "num_samples": num_samples,
           "spots": v.n_obs, "genes": int(res["n_genes"]), "training_s": s["training"], "sampling_s": s["sampling"],
           "ms_per_epoch": 1000 * s["training"] / epochs, "final_loss": float(res["history"]["elbo_train"][-1])}
    np.save(out / f"q05_{backend}_{seed}.npy", v.obsm["cell2location_q05"].to_numpy())
    spatial, half, truth, ncells = truth_data(ref)
    sp_ = spatial.copy()
    cell2location(sp_, half, labels_key="cell_type", n_cells_per_location=float(ncells.mean()),
                  reference_max_epochs=250, max_epochs=truth_epochs, lr=0.02, reference_genes="shared",
                  model_kwargs={"A_factors_per_location": 3, "B_groups_per_location": 3}, num_samples=num_samples,
                  device="cpu", backend=backend, random_state=seed, verbose=False)
    row["truth_r"], row["truth_rmse"] = score(sp_.obsm["cell2location_proportions"], truth)
    with open(out / "runs.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row))


def backend_report(out: Path):
    import pandas as pd

    runs = pd.read_json(out / "runs.jsonl", lines=True)
    print(runs.to_string(index=False))
    q = {(r.backend, r.seed): np.load(out / f"q05_{r.backend}_{r.seed}.npy").ravel() for r in runs.itertuples()}
    keys = sorted(q)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            print(f"q05 r {a} vs {b}: {np.corrcoef(q[a], q[b])[0, 1]:.4f}")
    g = runs.groupby("backend")[["ms_per_epoch", "sampling_s", "truth_r", "truth_rmse"]].mean()
    print(g.round(4).to_string())
    if {"pybridge", "cell2location"} <= set(g.index):
        print(f"training speed-up (package ms/epoch / pybridge ms/epoch): "
              f"{g.loc['cell2location', 'ms_per_epoch'] / g.loc['pybridge', 'ms_per_epoch']:.2f}x; "
              f"sampling: {g.loc['cell2location', 'sampling_s'] / g.loc['pybridge', 'sampling_s']:.1f}x")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1000, help="Cell2location training epochs (default 1000)")
    p.add_argument("--ref-epochs", type=int, default=250, help="RegressionModel epochs (default 250)")
    p.add_argument("--num-samples", type=int, default=200, help="posterior samples (default 200)")
    p.add_argument("--lr", type=float, default=0.002, help="learning rate for the overhead runs (cell2location's)")
    p.add_argument("--truth-epochs", type=int, default=500)
    p.add_argument("--truth-lr", type=float, default=0.02)
    p.add_argument("--truth-spots", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1, help="alternating repeats of direct/pybridge runs")
    p.add_argument("--skip-truth", action="store_true")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--backend-run", choices=("pybridge", "cell2location"), help="one backend run (see above)")
    p.add_argument("--backend-report", metavar="DIR", help="report the backend runs in DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/bench_c2l_backends", help="directory of the backend runs")
    a = p.parse_args(argv)
    if a.backend_report:
        return backend_report(Path(a.backend_report))

    import anndata as ad

    data = Path(os.environ.get("PYBRIDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    ref = ad.read_h5ad(data / "lymphnode_reference.h5ad")
    vis = ad.read_h5ad(data / "lymphnode_visium.h5ad")
    warnings.filterwarnings("ignore")
    if a.backend_run:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        return backend_run(ref, vis, backend=a.backend_run, seed=a.seed, epochs=a.epochs, lr=a.lr,
                           num_samples=a.num_samples, out=out, truth_epochs=a.truth_epochs)
    import logging

    for n in ("lightning.pytorch", "lightning.fabric", "scvi"):
        logging.getLogger(n).setLevel(logging.ERROR)
    import torch

    figures = {"threads": torch.get_num_threads(), "spots": vis.n_obs, "reference_cells": ref.n_obs,
               "epochs": a.epochs, "reference_epochs": a.ref_epochs, "num_samples": a.num_samples, "runs": []}
    print(f"cell2location, {vis.n_obs} spots, {ref.n_obs} reference cells, {a.ref_epochs} + {a.epochs} epochs, "
          f"{a.num_samples} posterior samples, torch threads {figures['threads']}")
    for rep in range(a.repeats):
        kw = {"ref_epochs": a.ref_epochs, "epochs": a.epochs, "num_samples": a.num_samples, "lr": a.lr}
        (dw, dc), (tw, tc), q_direct = direct_cell2location(ref, vis, **kw)
        (pw, pc), _, q_pyb = pybridge_cell2location(ref, vis, **kw)
        agree = float(np.corrcoef(q_direct.to_numpy().ravel(), q_pyb.loc[q_direct.index].to_numpy().ravel())[0, 1])
        run = {"direct_wall": dw, "direct_cpu": dc, "direct_train_wall": tw, "direct_train_cpu": tc,
               "pybridge_wall": pw, "pybridge_cpu": pc, "ratio_wall": pw / dw, "ratio_cpu": pc / dc,
               "s_per_1000_epochs_wall": tw / a.epochs * 1000, "s_per_1000_epochs_cpu": tc / a.epochs * 1000,
               "q05_agreement_r": agree}
        (sw, sc_), _, q_shared = pybridge_cell2location(ref, vis, **kw, reference_genes="shared")
        agree_s = float(np.corrcoef(q_direct.to_numpy().ravel(),
                                    q_shared.loc[q_direct.index].to_numpy().ravel())[0, 1])
        run.update({"pybridge_shared_wall": sw, "pybridge_shared_cpu": sc_, "ratio_shared_wall": sw / dw,
                    "ratio_shared_cpu": sc_ / dc, "q05_agreement_shared_r": agree_s})
        figures["runs"].append(run)
        print(f"[{rep}] direct {dw:.1f} s (cpu {dc:.1f}) | pybridge {pw:.1f} s (cpu {pc:.1f}) | "
              f"overhead ratio wall {pw / dw:.3f}, cpu {pc / dc:.3f} | mapping {tw / a.epochs * 1000:.1f} s "
              f"(cpu {tc / a.epochs * 1000:.1f}) per 1,000 epochs | q05 agreement r = {agree:.3f}")
        print(f"    pybridge reference_genes='shared': {sw:.1f} s (cpu {sc_:.1f}), ratio to direct wall "
              f"{sw / dw:.3f}, cpu {sc_ / dc:.3f}, q05 agreement with direct r = {agree_s:.3f}")
    from pybridge.tl import deconvolve

    v = vis.copy()
    t = _timer()
    deconvolve(v, ref, labels_key="cell_type", method="nnls")
    nw, nc = _since(t)
    figures["nnls_wall"], figures["nnls_cpu"] = nw, nc
    print(f"nnls: {nw:.2f} s (cpu {nc:.2f}) for {vis.n_obs} spots x {v.uns['nnls']['n_genes']} genes")

    if not a.skip_truth:
        from deconv_truth import variable_genes

        hvg = variable_genes(ref, 2000)
        shared = [g for g in ref.var_names if g in set(vis.var_names)]
        figures["truth"] = {}
        for name, genes, depth in (("hvg2000", hvg, 1.0), ("visium_shared558", shared, 1.0),
                                   ("visium_shared558_depth0.2", shared, 0.2)):
            res = ground_truth(ref, genes, epochs=a.truth_epochs, ref_epochs=a.ref_epochs, lr=a.truth_lr,
                               n_spots=a.truth_spots, num_samples=a.num_samples, depth=depth)
            figures["truth"][name] = res
            print(f"ground truth [{name}: {res['genes']} genes, {res['spots']} spots, "
                  f"{res['mean_cells_per_spot']:.1f} cells and {res['mean_counts_per_spot']:.0f} counts per spot]: "
                  f"cell2location r = {res['cell2location']['r']:.3f} RMSE = {res['cell2location']['rmse']:.3f} "
                  f"({a.truth_epochs} epochs, lr {a.truth_lr}); nnls r = {res['nnls']['r']:.3f} "
                  f"RMSE = {res['nnls']['rmse']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1, default=float))
    return figures


if __name__ == "__main__":
    main()
