# %% [markdown]
# # pybridge from Python: the same engine on AnnData
#
# The R package is a thin layer over this engine: every job R users call on a Seurat object is a
# scanpy-style function here, taking an `AnnData`, writing its results into it
# (`obs`/`obsm`/`uns`) and never modifying the caller's matrices. This walkthrough runs them all
# on the embedded real data (no download).
#
# Run it as a script (`python vignettes/python-walkthrough.py --preset quick --out DIR`) or open it
# as a notebook (jupytext percent format). `--preset quick` (the default; what the tests run)
# trains every model briefly; `--preset full` uses the methods' usual settings (GPU advised).
# The headline numbers are written to `DIR/summary.json`.

# %%
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

import pybridge as pb

parser = argparse.ArgumentParser(description="pybridge Python walkthrough")
parser.add_argument("--preset", choices=["quick", "full"], default="quick")
parser.add_argument("--out", default=None, help="output directory (default: a temporary one)")
parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
args, _ = parser.parse_known_args()  # parse_known_args: also runs inside Jupyter
quick = args.preset == "quick"
device = args.device
out = Path(args.out or tempfile.mkdtemp(prefix="pybridge-walkthrough-"))
out.mkdir(parents=True, exist_ok=True)
summary: dict = {"preset": args.preset, "seconds": {}}
t_all = time.perf_counter()


def timed(name, f, *a, **k):
    t0 = time.perf_counter()
    res = f(*a, **k)
    summary["seconds"][name] = round(time.perf_counter() - t0, 1)
    print(f"{name}: {summary['seconds'][name]} s")
    return res


# %% [markdown]
# ## 1. Data
#
# Each loader returns a fresh AnnData with raw integer counts in `X` (cells x genes, CSR).
# Provenance: `pybridge/datasets/README.md`.

# %%
print(pb.datasets.DATASETS)
kang = pb.datasets.kang_ifnb()
print(kang)
print(kang.obs[["stim", "seurat_annotations"]].value_counts().head())

# %% [markdown]
# ## 2. Preprocessing: Seurat's chain on CPU or GPU
#
# `pb.pp.run_chain` = NormalizeData -> FindVariableFeatures(vst) -> ScaleData -> RunPCA ->
# FindNeighbors -> RunUMAP -> FindClusters, on a GPU through cupy when there is one. `X` becomes
# the log-normalised values; the counts stay in `layers["counts"]`.

# %%
timed("run_chain", pb.pp.run_chain, kang, n_comps=30, n_pcs=30, resolution=0.5, device=device)
print(kang)
print(kang.uns["preprocess"]["device"], kang.uns["preprocess"]["seconds"])

# %% [markdown]
# ## 3. Integration with scVI
#
# `stim` (CTRL / STIM) is the batch. The latent space goes to `obsm["X_scVI"]`; the model can be
# saved (`save_path=`) and reused to map new cells (`pb.tl.map_query_scvi`) or as an encoder for
# in-silico deletions (section 6). Training genes: the variable genes of section 2 plus four
# interferon-stimulated genes deleted in section 6 (without `genes=`, 2,000 batch-aware variable
# genes are chosen).

# %%
isgs = ["ISG15", "IFI6", "IFIT1", "MX1"]
genes = list(kang.var_names[kang.var["highly_variable"].to_numpy()])
genes += [g for g in isgs if g not in genes]
# quick: 60 epochs at learning rate 4e-3 (scvi-tools' 1e-3 needs ~400 epochs here)
scvi_kwargs = dict(max_epochs=60, kl_warmup_epochs=20, train_kwargs={"plan_kwargs": {"lr": 4e-3}}) if quick else {}
timed("integrate_scvi", pb.tl.integrate_scvi, kang, batch_key="stim", layer="counts", genes=genes, device=device,
      save_path=out / "scvi_kang", **scvi_kwargs)
scores = {
    emb: pb.tl.integration_scores(kang, embedding=emb, batch_key="stim", label_key="seurat_annotations")
    for emb in ("X_pca", "X_scVI")
}
cols = ["ilisi_norm", "asw_batch", "clisi_norm", "asw_label", "knn_label_accuracy"]
print(pd.DataFrame(scores).T[cols].round(3))
summary["integration"] = {k: {c: v[c] for c in cols} for k, v in scores.items()}

# %% [markdown]
# ## 4. Annotation: transfer cell types from CTRL to STIM cells
#
# The TOSICA-style transformer reads gene-set tokens (GO biological processes, embedded), is
# trained on the reference's labels and predicts the query, with a probability and per-cell
# attention to every gene set.

# %%
fresh = pb.datasets.kang_ifnb()
ref = fresh[fresh.obs["stim"] == "CTRL"].copy()
query = fresh[fresh.obs["stim"] == "STIM"].copy()
timed("annotate", pb.tl.annotate, query, ref, labels_key="seurat_annotations", method="tosica", device=device)
pred = query.obs["predicted_celltype"].astype(str)
truth = query.obs["seurat_annotations"].astype(str)
accuracy = float(np.mean(pred.to_numpy() == truth.to_numpy()))
f1 = []
for k in sorted(truth.unique()):
    tp = float(np.sum((pred == k) & (truth == k)))
    prec = tp / max(float(np.sum(pred == k)), 1.0)
    rec = tp / float(np.sum(truth == k))
    f1.append(0.0 if tp == 0 else 2 * prec * rec / (prec + rec))
summary["annotation"] = {"accuracy": accuracy, "macro_f1": float(np.mean(f1)), "n_query": int(query.n_obs)}
print(summary["annotation"])
print(pd.crosstab(truth, pred).iloc[:6, :6])

# %% [markdown]
# ## 5. Spatial deconvolution: cell2location and NNLS
#
# Spots x cell types abundances in `obsm["<key>_mean"/"_q05"/"_q95"]`, proportions in
# `obsm["<key>_proportions"]`, the summary (signatures, history) in `uns[key]`.

# %%
vis = pb.datasets.lymphnode_visium()
lnref = pb.datasets.lymphnode_reference()
timed("deconvolve_nnls", pb.tl.deconvolve, vis, lnref, labels_key="cell_type", method="nnls", key_added="nnls")
c2l_kwargs = dict(max_epochs=500, lr=0.02, num_samples=100) if quick else {}
timed("deconvolve_c2l", pb.tl.deconvolve, vis, lnref, labels_key="cell_type", method="cell2location",
      device=device, **c2l_kwargs)


# %% [markdown]
# A check against the data: B-cell abundance should follow the expression of B-cell markers in
# the spots. The classic markers (MS4A1, CD79A, CR2) are not in this Visium panel, so the markers
# are the 10 panel genes most specific to B cells in the reference.

# %%
def marker_share(spots, ref, cell_type, n=10):
    shared = ref.var_names.intersection(spots.var_names)
    x = sp.csr_matrix(ref[:, shared].X, dtype=np.float64)
    x = sp.diags(1e4 / np.asarray(x.sum(axis=1)).ravel()) @ x
    lab = ref.obs["cell_type"].astype(str).to_numpy()
    means = pd.DataFrame({t: np.asarray(x[lab == t].mean(axis=0)).ravel() for t in sorted(set(lab))}, index=shared)
    spec = (means[cell_type] + 0.1) / (means.drop(columns=cell_type).max(axis=1) + 0.1)
    markers = list(spec.sort_values(ascending=False).index[:n])
    v = sp.csr_matrix(spots.X)
    share = np.asarray(v[:, spots.var_names.get_indexer(markers)].sum(axis=1)).ravel() / np.asarray(v.sum(axis=1)).ravel()
    return pd.Series(share, index=spots.obs_names), markers


share, markers = marker_share(vis, lnref, "B")
print("B markers:", markers)
rho = vis.obsm["cell2location_q05"]["B"].corr(share, method="spearman")
rho_nnls = vis.obsm["nnls_mean"]["B"].corr(share, method="spearman")
summary["deconvolution"] = {"b_marker_spearman_c2l": float(rho), "b_marker_spearman_nnls": float(rho_nnls)}
print(vis.obsm["cell2location_q05"].iloc[:3, :5].round(2))
print(summary["deconvolution"])

# %% [markdown]
# ## 6. Perturbations: Augur and Mixscape
#
# Every method returns its table (also in `uns[key]["table"]`).

# %%
augur_kwargs = dict(n_subsamples=8, n_estimators=30) if quick else {}
aug = timed("augur", pb.tl.score_perturbation, pb.datasets.kang_ifnb(), condition_key="stim", control="CTRL",
            method="augur", cell_type_key="seurat_annotations", **augur_kwargs)
aug = aug.dropna(subset=["auc"]).sort_values("auc", ascending=False)
print(aug[["cell_type", "auc", "n_control", "n_perturbed"]].head())
summary["augur_top"] = dict(zip(aug["cell_type"].head(3), aug["auc"].head(3).astype(float)))

eccite = pb.datasets.papalexi_eccite()
mix = timed("mixscape", pb.tl.score_perturbation, eccite, condition_key="top_grna_target", control="non-targeting",
            method="mixscape", split_key="bio_rep")
print(mix.sort_values("ko_fraction", ascending=False)[["target", "n_cells", "n_ko", "ko_fraction"]].head(6))
print(eccite.obs["mixscape_class_global"].value_counts())
summary["ko_fraction"] = dict(zip(mix["target"], mix["ko_fraction"].astype(float)))

# %% [markdown]
# In-silico deletion: does deleting an interferon gene move STIM CD14 monocytes towards the
# CTRL ones? The encoder must see the stimulation, so it is an scVI model trained on all cells
# as one batch (the model of section 3 has `stim` as its batch: it was trained to remove exactly
# this difference). Genes the encoder was not trained on are rejected with a clear error:
# deleting them could not change the embedding.

# %%
enc = pb.datasets.kang_ifnb()
enc.obs["sample"] = "kang"  # one batch
timed("scvi encoder", pb.tl.integrate_scvi, enc, batch_key="sample", genes=genes, device=device,
      save_path=out / "scvi_encoder", **scvi_kwargs)
ins = timed("insilico", pb.tl.score_perturbation, pb.datasets.kang_ifnb(), condition_key="stim", control="CTRL",
            method="insilico", cell_type_key="seurat_annotations", model=str(out / "scvi_encoder"), genes=isgs,
            groups="CD14 Mono", n_random=10 if quick else 100, max_cells=200 if quick else None, device=device)
print(ins[["gene", "goal_shift", "goal_shift_null_mean", "goal_shift_pval"]])
summary["insilico_goal_shift"] = dict(zip(ins["gene"], ins["goal_shift"].astype(float)))
summary["insilico_null_mean"] = dict(zip(ins["gene"], ins["goal_shift_null_mean"].astype(float)))

# %% [markdown]
# ## 7. Files: h5ad and Seurat .rds
#
# `write_h5ad` is anndata's own. `pb.io.write_seurat` / `pb.io.read_seurat` write and read Seurat
# `.rds` files through an embedded R (rpy2) with the R package's mapping: a Python pipeline can
# hand a Seurat object to an R colleague and read theirs.

# %%
small = pb.datasets.pbmc_3tech()
small.write_h5ad(out / "pbmc_3tech.h5ad")
rds = timed("write_seurat", pb.io.write_seurat, small, out / "pbmc_3tech.rds", overwrite=True)
back = timed("read_seurat", pb.io.read_seurat, out / "pbmc_3tech.rds")
same_counts = bool((sp.csr_matrix(back.X) != sp.csr_matrix(small.X)).nnz == 0)
same_obs = bool((back.obs["cell_type"].astype(str).to_numpy() == small.obs["cell_type"].astype(str).to_numpy()).all())
print(back)
print("counts identical after .rds round trip:", same_counts, "| cell types identical:", same_obs)
summary["rds_round_trip"] = {"counts_identical": same_counts, "cell_type_identical": same_obs}

# %%
summary["wall_seconds"] = round(time.perf_counter() - t_all, 1)
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"summary written to {out / 'summary.json'} ({summary['wall_seconds']} s)")
