"""Annotation by transfer: speed and accuracy of each method, side by side, on CPU.

Splits (real data, ../shared/data):

- pbmc_3tech: train on 10x 3' v2 (480 cells), predict 5' (430 cells), obs ``cell_type``;
- kang_ifnb: train on CTRL (1,000 cells), predict IFN-beta STIM (1,000 cells),
  obs ``seurat_annotations``.

Methods: ``tosica`` (pybridge's gene-set-token transformer, default settings), ``scanvi``
(scvi-tools; default 100 SCVI + 20 SCANVI epochs), ``celltypist`` (custom model), and a
baseline: scikit-learn logistic regression on 2,000 HVGs of the reference (log1p CP10k), as
in the issue. Reports accuracy and macro-F1 of the argmax label (no "Unknown"), the share
of cells a default threshold (0.5) would call "Unknown" and the accuracy of the others,
training and prediction time, and cells per second:

- train cells/s = reference cells / training wall time (whole training, all epochs; for
  scanvi the training also sees the query cells);
- predict cells/s = query cells / prediction wall time.

Usage: python benchmarks/bench_annotate.py [--threads N] [--methods tosica,scanvi,celltypist,logreg]
       [--splits pbmc,kang] [--seeds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PYBRIDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SPLITS = {
    "pbmc": ("pbmc_3tech.h5ad", "donor", "3pv2", "5p", "cell_type"),
    "kang": ("kang_ifnb.h5ad", "stim", "CTRL", "STIM", "seurat_annotations"),
}


def load(split):
    import anndata as ad

    f, bk, r, q, key = SPLITS[split]
    a = ad.read_h5ad(DATA / f)
    return a[a.obs[bk] == r].copy(), a[a.obs[bk] == q].copy(), key


def run_pybridge(method, ref, query, key, seed):
    from pybridge.tl import annotate

    q = query.copy()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        annotate(q, ref, labels_key=key, method=method, device="cpu", random_state=seed)
    total = time.perf_counter() - t0
    info = q.uns["predicted_celltype"]
    train = float(info.get("train", {}).get("seconds", np.nan))
    pred = float(info.get("predict_seconds", np.nan))
    probs = q.obsm["predicted_celltype_probabilities"]
    argmax = probs.columns.to_numpy()[probs.to_numpy().argmax(axis=1)]
    p = q.obs["predicted_celltype_probability"].to_numpy()
    return argmax, p, train, pred, total


def run_logreg(ref, query, key, seed):
    """The issue's baseline: LogisticRegression on 2,000 HVGs (Seurat flavour) of log1p CP10k."""
    import scanpy as sc
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    r = ref.copy()
    sc.pp.normalize_total(r, target_sum=1e4)
    sc.pp.log1p(r)
    sc.pp.highly_variable_genes(r, n_top_genes=2000, flavor="seurat")
    genes = r.var_names[r.var["highly_variable"]].intersection(query.var_names)
    clf = LogisticRegression(max_iter=1000, random_state=seed).fit(r[:, genes].X, r.obs[key].astype(str))
    train = time.perf_counter() - t0
    t1 = time.perf_counter()
    q = query.copy()
    sc.pp.normalize_total(q, target_sum=1e4)
    sc.pp.log1p(q)
    prob = clf.predict_proba(q[:, genes].X)
    pred = time.perf_counter() - t1
    return clf.classes_[prob.argmax(axis=1)], prob.max(axis=1), train, pred, train + pred


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--methods", default="tosica,scanvi,celltypist,logreg")
    ap.add_argument("--splits", default="pbmc,kang")
    ap.add_argument("--seeds", type=int, default=1, help="repetitions with seeds 0..n-1 (figures are means)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for split in args.splits.split(","):
        ref, query, key = load(split)
        y = query.obs[key].astype(str).to_numpy()
        for method in args.methods.split(","):
            res = []
            for seed in range(args.seeds):
                if method == "logreg":
                    lab, p, tr, pr, tot = run_logreg(ref, query, key, seed)
                else:
                    lab, p, tr, pr, tot = run_pybridge(method, ref, query, key, seed)
                sure = p >= 0.5
                res.append(dict(
                    accuracy=accuracy_score(y, lab), macro_f1=f1_score(y, lab, average="macro"),
                    unknown=float(1 - sure.mean()),
                    accuracy_called=accuracy_score(y[sure], lab[sure]) if sure.any() else np.nan,
                    train_s=tr, predict_s=pr, total_s=tot,
                ))
            m = {k: float(np.mean([r[k] for r in res])) for k in res[0]}
            m.update(split=split, method=method, n_ref=ref.n_obs, n_query=query.n_obs, seeds=args.seeds,
                     accuracy_min=float(min(r["accuracy"] for r in res)),
                     train_cells_per_s=ref.n_obs / m["train_s"], predict_cells_per_s=query.n_obs / m["predict_s"])
            rows.append(m)
            print(f"{split:5s} {method:10s} acc {m['accuracy']:.3f} (min {m['accuracy_min']:.3f}) "
                  f"F1 {m['macro_f1']:.3f} | Unknown {m['unknown']:.1%}, acc of called {m['accuracy_called']:.3f} "
                  f"| train {m['train_s']:.1f}s ({m['train_cells_per_s']:.0f} cells/s) "
                  f"predict {m['predict_s']:.2f}s ({m['predict_cells_per_s']:.0f} cells/s)", flush=True)
    print("\nsplit  method      accuracy  macro-F1  unknown  train s  train cells/s  predict cells/s")
    for m in rows:
        print(f"{m['split']:6s} {m['method']:10s} {m['accuracy']:8.3f} {m['macro_f1']:9.3f} {m['unknown']:8.1%} "
              f"{m['train_s']:8.1f} {m['train_cells_per_s']:14.0f} {m['predict_cells_per_s']:16.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
