"""Wall time of each perturbation-scoring method on CPU, on the shared real data.

- augur (tl.augur): Kang IFN-beta, 2,000 cells, 13 cell types, Augur's defaults (50 subsamples
  of 20 cells per condition, 3 folds, 100 trees), n_jobs=1 and n_jobs=2 threads; with
  ``--pertpy FILE`` (written by benchmarks/augur_pertpy_reference.py in a pertpy venv) the
  agreement with pertpy's Augur (AUC differences, rank correlation, variable-gene overlap).
- mixscape (tl.mixscape): Papalexi ECCITE-seq, 20,729 cells x 299 genes, 25 targets, split by
  replicate.
- insilico (tl.insilico_deletion): a scVI model trained on all Kang cells (2,000 HVGs); 100 genes deleted in 500 STIM
  cells (goal: CTRL cells' mean embedding), each against 20 random genes of matched expression;
  plus the four interferon genes in STIM CD14 monocytes (ranks among 50 random genes).

Prints the figures, the Kang AUC ranking, the Papalexi KO fractions and the in-silico ranks.

Usage: python benchmarks/bench_perturbation.py [--shared DIR] [--quick] [--model DIR] [--epochs N]
       [--pertpy FILE] [--skip-insilico]
``--quick``: Augur with 10 subsamples and n_jobs=2 only, in-silico with 20 genes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

warnings.simplefilter("ignore")
pd.set_option("display.width", 200)


def _shared(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("PYBRIDGE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=None)
    ap.add_argument("--quick", action="store_true", help="Augur with 10 subsamples (the full run: 50)")
    ap.add_argument("--model", default=None, help="a saved scVI model dir trained on Kang (else trained here)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pertpy", default=None, help="JSON of benchmarks/augur_pertpy_reference.py")
    ap.add_argument("--skip-insilico", action="store_true")
    args = ap.parse_args(argv)
    from pybridge import tl

    shared = _shared(args.shared)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPU cores: {os.cpu_count()}, load average at start: {load:.1f}")
    figures = {}

    # ---------------------------------------------------------------- augur
    kang = ad.read_h5ad(shared / "kang_ifnb.h5ad")
    ns = 10 if args.quick else 50
    for n_jobs in (2,) if args.quick else (1, 2):
        a = kang.copy()
        t0 = time.perf_counter()
        table = tl.augur(a, "stim", "CTRL", cell_type_key="seurat_annotations", n_subsamples=ns, n_jobs=n_jobs,
                         random_state=0, verbose=False)
        figures[f"augur_2000cells_{ns}subsamples_njobs{n_jobs}_s"] = time.perf_counter() - t0
    print(f"\nAugur ranking, Kang IFN-beta (STIM vs CTRL), {ns} subsamples x 3 folds x 100 trees:")
    print(table[["cell_type", "auc", "auc_sd", "rank", "n_control", "n_perturbed", "n_genes", "status"]]
          .to_string(index=False))
    if args.pertpy:
        _compare_pertpy(kang, table, args.pertpy)

    # ---------------------------------------------------------------- mixscape
    pap = ad.read_h5ad(shared / "papalexi_eccite.h5ad")
    t0 = time.perf_counter()
    mt = tl.mixscape(pap, "top_grna_target", "non-targeting", split_by="bio_rep", verbose=False)
    figures["mixscape_20729cells_s"] = time.perf_counter() - t0
    print(f"\nMixscape KO fractions, Papalexi ECCITE-seq ({pap.n_obs} cells, {pap.n_vars} genes):")
    print(mt[["target", "n_cells", "n_de_genes", "n_ko", "n_np", "ko_fraction", "status"]].to_string(index=False))
    print("global classes:", pap.obs["mixscape_class_global"].value_counts().to_dict())

    if args.skip_insilico:
        _print_figures(figures)
        return 0
    # ---------------------------------------------------------------- insilico
    model = args.model
    if model is None:
        model = tempfile.mkdtemp(prefix="bench_pert_scvi_")
        b = kang.copy()
        b.obs["sample"] = "kang"
        t0 = time.perf_counter()
        tl.integrate_scvi(b, batch_key="sample", n_top_genes=2000, max_epochs=args.epochs, batch_size=128,
                          save_path=model, device="cpu", random_state=0)
        figures[f"scvi_training_{args.epochs}epochs_s (not part of scoring)"] = time.perf_counter() - t0
    from pybridge.tl._encoders import load_encoder

    genes_model = load_encoder(model, device="cpu").genes
    stim = kang[kang.obs["stim"] == "STIM"]
    expr = np.asarray((stim[:, genes_model].X > 0).mean(axis=0)).ravel()
    ng = 20 if args.quick else 100
    genes_top = [genes_model[i] for i in np.argsort(-expr)[:ng]]
    a = kang.copy()
    t0 = time.perf_counter()
    t100 = tl.insilico_deletion(a, "stim", "CTRL", model=model, genes=genes_top, n_random=20, max_cells=500,
                                device="cpu", random_state=0)
    el = time.perf_counter() - t0
    figures[f"insilico_{ng}genes_x_500cells_with_matched_null_s"] = el
    print(f"\nIn-silico: {ng} genes x 500 STIM cells, null of 20 matched random genes each: {el:.1f} s; "
          f"median goal-shift rank {t100['goal_shift_rank'].median():.0f} of 21")
    a = kang.copy()
    t0 = time.perf_counter()
    ti = tl.insilico_deletion(a, "stim", "CTRL", model=model, cell_type_key="seurat_annotations",
                              groups=["CD14 Mono"], genes=["ISG15", "IFI6", "IFIT1", "MX1"], n_random=50,
                              device="cpu", random_state=0)
    figures["insilico_4genes_CD14Mono_50null_s"] = time.perf_counter() - t0
    print("\nIn-silico deletion in STIM CD14 Mono, goal = CTRL CD14 Mono mean embedding (scVI):")
    print(ti[["gene", "n_cells", "goal_shift", "goal_shift_null_mean", "goal_shift_z", "goal_shift_rank", "n_null",
              "goal_shift_pval", "cosine_shift", "cosine_shift_pval"]].to_string(index=False))

    _print_figures(figures)
    return 0


def _print_figures(figures):
    print("\nWall times (CPU):")
    for k, v in figures.items():
        print(f"  {k:60s} {v:8.1f}")


def _compare_pertpy(kang, table, path):
    """AUC agreement with pertpy's Augur and overlap of the variable genes (same data, same settings)."""
    import json

    from scipy.stats import spearmanr

    from pybridge.tl._augur import select_variance
    from pybridge.tl._perturbation_utils import lognorm

    ref = json.loads(Path(path).read_text())
    ours = dict(zip(table["cell_type"], table["auc"], strict=True))
    common = [t for t in ref["auc"] if t in ours and np.isfinite(ours[t])]
    a, b = np.array([ours[t] for t in common]), np.array([ref["auc"][t] for t in common])
    d = a - b
    print(f"\nAgreement with pertpy {ref.get('pertpy', '?')} Augur ({len(common)} cell types): mean difference "
          f"{d.mean():+.4f}, mean |difference| {np.abs(d).mean():.4f}, max |difference| {np.abs(d).max():.4f}, "
          f"Spearman {spearmanr(a, b).statistic:.3f}")
    print(pd.DataFrame({"pybridge": a, "pertpy": b, "difference": d}, index=common).round(3).to_string())
    x = lognorm(kang.X)
    for t, genes in ref.get("genes", {}).items():
        sel = set(kang.var_names[select_variance(x[(kang.obs["seurat_annotations"] == t).to_numpy()])])
        s2 = set(genes)
        print(f"  variable genes {t}: pybridge {len(sel)}, pertpy {len(s2)}, Jaccard {len(sel & s2) / len(sel | s2):.3f}")


if __name__ == "__main__":
    sys.exit(main())
