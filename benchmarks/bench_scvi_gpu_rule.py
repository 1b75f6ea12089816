"""Integration quality of the GPU training rule vs scvi-tools' batch-128 defaults (measured on any device).

:func:`pybridge._device.scvi_training` chooses, on a CUDA device, a larger minibatch (up to 1024,
keeping >= 32 minibatches per epoch) with a square-root-scaled learning rate and device-backed
data loading. Speed needs a GPU (``bench_gpu.py``); whether those settings integrate as well as
batch 128 does not: this script trains the same model with each setting *on the device given*
(the CPU is fine) and compares ``pybridge.tl.integration_scores``.

Settings (all with scvi-tools' default epochs, ``max_epochs=None``: 400 for these datasets):

- ``b128``: the CPU defaults (batch 128, lr 1e-3, scvi-tools' AnnData loader);
- ``rule``: what the rule picks on a GPU for this dataset (its size: batch 128 for < ~9,100
  cells) with device-backed loading;
- ``b1024``: what the rule picks from ~36,400 cells on (batch 1024, lr 1e-3 * sqrt(8) = 2.8e-3,
  device-backed loading), here on small data: the hardest case (8x fewer updates per epoch);
- ``b1024_lr1e-3``: batch 1024 without the learning-rate scaling (to show why it is scaled).

Each (dataset, setting, seed) runs in its own process so that the CPU lock is released in
between::

    python benchmarks/bench_scvi_gpu_rule.py run --dataset kang_ifnb --setting b1024 --seed 0 \\
        --out benchmarks/results/scvi_gpu_rule.jsonl
    python benchmarks/bench_scvi_gpu_rule.py report benchmarks/results/scvi_gpu_rule.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PYBRIDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
KEYS = {"kang_ifnb": ("stim", "seurat_annotations"), "pbmc_3tech": ("donor", "cell_type")}
SCORES = ("ilisi_norm", "asw_batch", "clisi_norm", "asw_label", "knn_label_accuracy")


def settings(name: str, n_obs: int, n_vars: int, device: str) -> dict:
    """integrate_scvi arguments of a setting (the rule's values computed as for a CUDA device)."""
    from pybridge._device import scvi_training

    if name == "b128":
        return {"batch_size": 128, "data_loading": "anndata"}
    if name == "rule":
        import pybridge._device as d

        real = d._torch_cuda_available
        d._torch_cuda_available = lambda: True  # ask the rule what it would pick on a GPU
        try:
            t = scvi_training("cuda", n_obs=n_obs, n_vars=n_vars, free_gpu_bytes=80 * 2**30)
        finally:
            d._torch_cuda_available = real
        kw = {"batch_size": t.batch_size, "data_loading": t.data_loading}
        if t.lr is not None:
            kw["train_kwargs"] = {"plan_kwargs": {"lr": t.lr}}
        return kw
    if name == "b1024":
        return {"batch_size": 1024, "data_loading": "device",
                "train_kwargs": {"plan_kwargs": {"lr": 1e-3 * math.sqrt(1024 / 128)}}}
    if name == "b1024_lr1e-3":
        return {"batch_size": 1024, "data_loading": "device"}
    raise ValueError(name)


def run(args) -> dict:
    import anndata as ad
    import torch

    import pybridge.tl as tl

    warnings.filterwarnings("ignore")
    batch_key, label_key = KEYS[args.dataset]
    a = ad.read_h5ad(DATA / f"{args.dataset}.h5ad")
    kw = settings(args.setting, a.n_obs, min(2000, a.n_vars), args.device)
    t0 = time.perf_counter()
    tl.integrate_scvi(a, batch_key=batch_key, n_top_genes=2000, max_epochs=args.epochs, device=args.device,
                      random_state=args.seed, verbose=False, **kw)
    sec = time.perf_counter() - t0
    p = a.uns["X_scVI"]["params"]
    sc = tl.integration_scores(a, embedding="X_scVI", batch_key=batch_key, label_key=label_key)
    row = {"dataset": args.dataset, "setting": args.setting, "seed": args.seed, "device": args.device,
           "n_obs": a.n_obs, "epochs": p["epochs_trained"], "batch_size": p["batch_size"], "lr": p.get("lr"),
           "data_loading": p["data_loading"], "seconds": sec, "threads": torch.get_num_threads(),
           "final_elbo": float(a.uns["X_scVI"]["elbo_train"][-1]), **{k: float(sc[k]) for k in SCORES}}
    print(json.dumps(row))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
    return row


def report(path: str) -> None:
    import pandas as pd

    df = pd.read_json(path, lines=True)
    agg = df.groupby(["dataset", "setting"]).agg(
        n=("seed", "count"), batch=("batch_size", "first"), lr=("lr", "first"), loading=("data_loading", "first"),
        s_per_epoch=("seconds", lambda s: float(s.mean()) / float(df.loc[s.index, "epochs"].mean())),
        **{k: (k, "mean") for k in SCORES})
    pd.set_option("display.width", 200)
    print(agg.round(3).to_string())
    for ds, g in agg.groupby(level=0):
        base = g.loc[(ds, "b128")]
        for st in g.index.get_level_values(1):
            if st == "b128":
                continue
            d = {k: g.loc[(ds, st), k] - base[k] for k in SCORES}
            print(f"{ds} {st} - b128: " + ", ".join(f"{k} {v:+.3f}" for k, v in d.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", choices=sorted(KEYS), default="kang_ifnb")
    r.add_argument("--setting", choices=("b128", "rule", "b1024", "b1024_lr1e-3"), default="b128")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--epochs", type=int, default=None, help="default: scvi-tools' heuristic (400 here)")
    r.add_argument("--device", default="cpu")
    r.add_argument("--out")
    rp = sub.add_parser("report")
    rp.add_argument("path")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args)
    else:
        report(args.path)


if __name__ == "__main__":
    sys.exit(main())
