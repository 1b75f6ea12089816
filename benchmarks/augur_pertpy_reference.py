"""pertpy's Augur on Kang IFN-beta: the reference for pybridge's tl.augur (run in its OWN venv).

pertpy is not a pybridge dependency; install it in a throwaway environment, e.g.

    python3 -m venv /tmp/pertpy-venv
    /tmp/pertpy-venv/bin/pip install pertpy==1.0.3 filelock "statsmodels<0.15"
    /tmp/pertpy-venv/bin/python benchmarks/augur_pertpy_reference.py /work/shared/data/kang_ifnb.h5ad pertpy_kang.json

then ``python benchmarks/bench_perturbation.py --pertpy pertpy_kang.json`` prints the agreement.
Writes ``{"auc": {cell type: mean_augur_score}, "genes": {cell type: select_variance genes},
"seconds", "pertpy"}``. Settings: Augur's defaults (50 subsamples of 20 cells, 3 folds, 100
trees, 2 features per split, var_quantile 0.5, span 0.75), counts per 10,000 + log1p as
pybridge does, min_cells 20 as pybridge (pertpy's default is n_subsamples).
"""

import json
import sys
import time
import warnings

warnings.simplefilter("ignore")

import anndata as ad  # noqa: E402
import scanpy as sc  # noqa: E402

import pertpy as pt  # noqa: E402


def main(h5ad: str, out: str, n_subsamples: int = 50) -> None:
    a = ad.read_h5ad(h5ad)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    ag = pt.tl.Augur("random_forest_classifier", n_estimators=100, max_features=2, random_state=0)
    loaded = ag.load(a, label_col="stim", cell_type_col="seurat_annotations")
    genes = {}
    for t in ["CD14 Mono", "B", "NK", "DC", "CD4 Naive T"]:
        sub = ag.select_variance(loaded[loaded.obs["cell_type"] == t].copy(), var_quantile=0.5,
                                 filter_negative_residuals=False, span=0.75)
        genes[t] = sub.var_names[sub.var["highly_variable"].to_numpy()].tolist()
    t0 = time.time()
    _, res = ag.predict(loaded, n_subsamples=n_subsamples, subsample_size=20, folds=3, n_threads=2, random_state=0,
                        select_variance_features=True, min_cells=20)
    auc = res["summary_metrics"].loc["mean_augur_score"].to_dict()
    json.dump({"auc": auc, "genes": genes, "seconds": time.time() - t0, "pertpy": pt.__version__}, open(out, "w"))
    print(json.dumps(auc, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *(int(v) for v in sys.argv[3:4]))
