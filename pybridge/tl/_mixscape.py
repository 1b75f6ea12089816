"""Mixscape: which guide-carrying cells of a CRISPR screen were really knocked out.

Papalexi et al. 2021, "Characterizing the molecular regulation of inhibitory immune
checkpoints with multimodal single-cell screens", Nat Genet 53:322 (Seurat ``CalcPerturbSig`` +
``RunMixscape``; pertpy ``pt.tl.Mixscape``). Each cell's perturbation signature is its
expression minus that of its nearest non-targeting neighbours; per target, a two-component
Gaussian mixture on the projection onto the target-vs-non-targeting direction separates
knocked-out (KO) from non-perturbed (NP) cells.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_obs_key, check_obs_level, clean_uns, is_verbose, logger, progress
from ._perturbation_utils import check_cpu_device, condition_labels, lognorm_counts
from ._perturbation_utils import targets as _targets


def mixscape(
    adata,
    pert_key: str,
    control: str,
    *,
    targets: str | list[str] | None = None,
    split_by: str | None = None,
    layer: str | None = None,
    n_neighbors: int = 20,
    n_pcs: int = 40,
    logfc_threshold: float = 0.25,
    pval_cutoff: float = 0.05,
    min_pct: float = 0.1,
    min_de_genes: int = 5,
    iter_num: int = 10,
    scale: bool = True,
    perturbation_type: str = "KO",
    random_state: int = 0,
    key_added: str = "mixscape",
    device: str = "cpu",
    verbose: bool | None = None,
) -> pd.DataFrame:
    """Call knocked-out (KO) and non-perturbed (NP) cells per guide target (Mixscape).

    Counts (``X`` or ``layer``) are log-normalised (counts per 10,000, ``log1p``); the caller's
    matrices are not modified. Steps, as Seurat's ``CalcPerturbSig`` + ``RunMixscape``:

    1. genes of each target: differentially expressed between its cells and the non-targeting
       cells (Wilcoxon, Bonferroni-adjusted ``p < pval_cutoff``, ``|avg log2 FC| >=
       logfc_threshold``, detected in ``>= min_pct`` of either group); targets with fewer than
       ``min_de_genes`` genes are all NP;
    2. perturbation signature: each cell's expression minus ``log1p`` of the mean ``expm1``
       expression of its ``n_neighbors`` nearest non-targeting cells in a PCA (``n_pcs``
       components of the scaled expression; within each ``split_by`` level);
    3. per target: the signature of its genes over its cells and the non-targeting cells (scaled
       per gene with ``scale``, as Seurat's default ``slot = "scale.data"``), projected on the mean
       KO-minus-NT direction; a two-component Gaussian mixture whose non-targeting component keeps
       its mean and variance; posterior of the second component = ``p_ko``; refit on the new KO
       cells until the calls do not change (at most ``iter_num`` times).

    Differences from Seurat's ``RunMixscape``: the DE test is Wilcoxon (pertpy's default; Seurat's
    ``TopDEGenesMixscape`` uses ``test.use = "LR"``), and the genes and mixtures are computed over
    all replicates at once (Seurat and pertpy repeat them within each ``split.by`` level; here the
    split only chooses the neighbours).

    Results use Seurat's and pertpy's names (with the default ``key_added="mixscape"``):

    - ``obs["mixscape_class"]`` (categorical): ``"<target> KO"``, ``"<target> NP"``, or the
      ``control`` label for non-targeting cells (Seurat: meta.data ``mixscape_class``);
    - ``obs["mixscape_class_global"]`` (categorical): ``control`` / ``"NP"`` / ``"KO"`` (Seurat:
      ``mixscape_class.global``; NaN for cells of targets not classified);
    - ``obs["mixscape_class_p_ko"]`` (float64): posterior probability of KO; 0 for non-targeting
      cells and for targets without DE genes;
    - ``layers["X_pert"]`` (float32, dense, cells x genes): the perturbation signature (pertpy's
      name; Seurat's ``PRTB`` assay; memory ``4 * n_obs * n_vars`` bytes);
    - ``uns["mixscape"]``: ``table``, ``de_genes``, ``params`` and ``pvec``: the first projection
      of each target as a long DataFrame (``cell`` (obs name), ``target``, ``split``, ``pvec``,
      ``label`` = target or control), the content of Seurat's ``Tool(object, "RunMixscape")`` and
      pertpy's ``uns["mixscape"][target][split]``.

    Parameters
    ----------
    adata
        :class:`~anndata.AnnData`, cells x genes, raw counts in ``X`` or ``layer``.
    pert_key
        Column of ``obs`` with each cell's guide target (e.g. ``"top_grna_target"``; Seurat:
        ``labels``).
    control
        The non-targeting level of ``pert_key`` (Seurat: ``nt.class.name``).
    targets
        Targets to classify (default: every level other than ``control``).
    split_by
        Column of ``obs`` with replicates: nearest non-targeting neighbours are found within each
        (Seurat's ``split.by``).
    layer
        Layer holding the counts (``None``: ``X``).
    n_neighbors, n_pcs
        Non-targeting neighbours per cell (20) in a PCA of this many components (40, as the
        Papalexi vignette).
    logfc_threshold, pval_cutoff, min_pct, min_de_genes, iter_num
        See the steps above (Seurat's defaults).
    scale
        Scale the signature of a target's genes before projecting (Seurat's ``slot =
        "scale.data"``, pertpy's ``scale``).
    perturbation_type
        Label of perturbed cells (Seurat's ``prtb.type``, pertpy's ``perturbation_type``):
        ``"<target> KO"`` and the ``..._p_ko`` column for ``"KO"``.
    random_state
        Seed of the PCA and the mixture fits.
    key_added
        Prefix of the results: ``obs[f"{key_added}_class"]``, ``obs[f"{key_added}_class_global"]``,
        ``obs[f"{key_added}_class_p_{perturbation_type.lower()}"]`` and ``uns[key_added]``
        (``layers["X_pert"]`` keeps its name).
    device
        Accepted for symmetry with the other jobs; Mixscape runs on CPU.
    verbose
        Notes and timing (``None``: ``pybridge.settings.verbosity``).

    Returns
    -------
    pandas.DataFrame
        One row per target, highest KO fraction first: ``target, n_cells, n_de_genes, n_ko,
        n_np, ko_fraction, iterations, status``. Also in ``uns[key_added]["table"]``, with
        ``uns[key_added]["de_genes"]`` (``{target: [genes]}``) and ``["params"]``.

    Raises
    ------
    KeyError
        ``pert_key``, ``split_by`` or ``layer`` missing (lists what exists).
    ValueError
        ``control`` / a target not a level (lists the levels); a ``split_by`` level without
        non-targeting cells; a bad ``device``.
    """
    t0 = time.perf_counter()
    cond = condition_labels(adata, pert_key)
    check_obs_level(adata, pert_key, control, what="control")
    control = str(control)
    check_cpu_device(device)
    if split_by is not None:
        check_obs_key(adata, split_by, what="split_by")
    tg = _targets(adata, pert_key, cond, control, targets)
    x = lognorm_counts(adata, layer, method="Mixscape")
    split = None if split_by is None else adata.obs[split_by].astype(str).to_numpy()
    seed = int(random_state)
    ptype = str(perturbation_type)
    cls, glob, pko, table, extra, sig, pv = _mixscape(
        x, np.asarray(adata.var_names).astype(str), cond, control, tg, split,
        n_neighbors=n_neighbors, n_pcs=n_pcs, logfc_threshold=logfc_threshold, pval_cutoff=pval_cutoff,
        min_pct=min_pct, min_de_genes=min_de_genes, iter_num=iter_num, scale=bool(scale), perturbation_type=ptype,
        seed=seed, verbose=verbose,
    )
    pv["cell"] = np.asarray(adata.obs_names)[pv["cell"].to_numpy(dtype=int)]
    key = key_added
    adata.obs[f"{key}_class"] = pd.Categorical(cls)
    adata.obs[f"{key}_class_global"] = pd.Categorical(glob, categories=[c for c in (control, "NP", ptype)
                                                                        if c in set(glob.tolist())])
    adata.obs[f"{key}_class_p_{ptype.lower()}"] = pko
    adata.layers["X_pert"] = sig
    params = dict(method="mixscape", condition_key=pert_key, control=control, targets=list(tg),
                  split_key=split_by, layer=layer, n_neighbors=n_neighbors, n_pcs=n_pcs,
                  logfc_threshold=logfc_threshold, pval_cutoff=pval_cutoff, min_pct=min_pct,
                  min_de_genes=min_de_genes, iter_num=iter_num, scale=bool(scale), perturbation_type=ptype,
                  random_state=seed, device="cpu", seconds=round(time.perf_counter() - t0, 3))
    adata.uns[key] = {"params": clean_uns(params), "table": table, "pvec": pv, **extra}
    if is_verbose(verbose):
        logger.info("mixscape: %d targets in %.1f s", table.shape[0], params["seconds"])
    return table


def _gmm_class():
    from sklearn.mixture import GaussianMixture

    class _FixedFirstGMM(GaussianMixture):
        """Two-component 1-d mixture whose first (non-targeting) component keeps a fixed mean and
        variance, as Seurat's ``normalmixEM(mean.constr = c(nt.mu, NA), sd.constr = c(nt.sd, NA))``."""

        def __init__(self, n_components=2, *, covariance_type="spherical", tol=1e-3, reg_covar=1e-6,
                     max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
                     precisions_init=None, random_state=None, warm_start=False, verbose=0, verbose_interval=10,
                     fixed_mean=0.0, fixed_var=1.0):
            super().__init__(n_components=n_components, covariance_type=covariance_type, tol=tol,
                             reg_covar=reg_covar, max_iter=max_iter, n_init=n_init, init_params=init_params,
                             weights_init=weights_init, means_init=means_init, precisions_init=precisions_init,
                             random_state=random_state, warm_start=warm_start, verbose=verbose,
                             verbose_interval=verbose_interval)
            self.fixed_mean = fixed_mean
            self.fixed_var = fixed_var

        def _m_step(self, X, log_resp, *args, **kwargs):
            super()._m_step(X, log_resp, *args, **kwargs)
            self.means_[0, 0] = self.fixed_mean
            self.covariances_[0] = self.fixed_var
            self.precisions_cholesky_ = 1.0 / np.sqrt(self.covariances_)

    return _FixedFirstGMM


def _norm_logpdf(x, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def _mixscape(x, var_names, cond, control, targets, split, *, n_neighbors, n_pcs, logfc_threshold, pval_cutoff,
              min_pct, min_de_genes, iter_num, scale, perturbation_type, seed, verbose=None):
    from sklearn.neighbors import NearestNeighbors

    from ..pp._highly_variable_genes import variable_genes
    from ..pp._pca import pca_matrix
    from ..pp._scale import scale_matrix

    n, g = x.shape
    nt = cond == control
    # 1. DE genes of each target vs NT (Seurat FindMarkers: Wilcoxon, Bonferroni, |avg log2FC|, min.pct)
    de = _mixscape_markers(x, var_names, cond, control, targets, logfc_threshold=logfc_threshold,
                           pval_cutoff=pval_cutoff, min_pct=min_pct, min_de_genes=min_de_genes)
    # 2. perturbation signature (Seurat's PRTB assay, pertpy's layers["X_pert"]), every gene:
    #    log1p(mean(expm1) of the k nearest NT cells in PCA) - expression
    sig = np.zeros((n, g), dtype=np.float32)
    # PCA of the scaled expression (2,000 variable genes when there are more), as Seurat's
    # NormalizeData -> FindVariableFeatures -> ScaleData -> RunPCA before CalcPerturbSig
    xv = x if g <= 2000 else x[:, np.flatnonzero(variable_genes(x, 2000, flavor="seurat")["highly_variable"])]
    xs = scale_matrix(xv, zero_center=True, max_value=10, dtype=np.float32)[0]
    k = int(min(n_pcs, xs.shape[1] - 1, n - 1))
    pcs = pca_matrix(xs, n_comps=k, random_state=seed).embedding
    del xs, xv
    splits = [np.ones(n, bool)] if split is None else [split == s for s in sorted(set(split.tolist()))]
    for m in splits:
        ntm = np.flatnonzero(m & nt)
        cells = np.flatnonzero(m)
        if ntm.size == 0:
            raise ValueError("a split (split_key level) has no non-targeting cells; "
                             "drop split_key or fix the labels.")
        kk = min(n_neighbors, ntm.size)
        nn = NearestNeighbors(n_neighbors=kk).fit(pcs[ntm])
        ind = nn.kneighbors(pcs[cells], return_distance=False)
        w = sp.csr_matrix((np.full(ind.size, 1.0 / kk), (np.repeat(np.arange(cells.size), kk), ind.ravel())),
                          shape=(cells.size, ntm.size))
        for j in range(0, g, 2000):  # gene chunks bound the dense temporaries
            xj = x[:, j:j + 2000]
            ref = np.log1p(sp.csr_matrix(w @ xj[ntm].expm1()).toarray())
            sig[cells, j:j + 2000] = ref - xj[cells].toarray()
    # 3. per target: projection on the target-vs-NT direction, 2-component mixture, iterate
    cls = cond.astype(object).copy()  # NT cells keep the control label (Seurat, pertpy)
    pko = np.zeros(n, dtype=np.float64)
    gmm = _gmm_class()
    rows, scores = [], []
    for tgt in progress(targets, desc="mixscape: targets", verbose=verbose):
        orig = np.flatnonzero(cond == tgt)
        genes = de.get(tgt, np.zeros(0, int))
        row = dict(target=tgt, n_cells=orig.size, n_de_genes=int(genes.size), n_ko=0, n_np=orig.size,
                   ko_fraction=0.0, status="ok")
        if genes.size == 0:
            cls[orig] = f"{tgt} NP"
            row["status"] = f"fewer than {min_de_genes} DE genes vs {control}: all NP"
            rows.append(row)
            continue
        allc = np.flatnonzero(nt | (cond == tgt))
        dat = sig[allc][:, genes].astype(np.float64)
        if scale:  # Seurat's slot = "scale.data" (ScaleData of the DE genes over these cells), pertpy's scale
            dat = scale_matrix(dat, zero_center=True, max_value=10, dtype=np.float64)[0]
        is_g = cond[allc] == tgt
        is_nt = ~is_g
        cur = is_g.copy()  # cells currently called KO (start: all guide cells)
        post = np.zeros(orig.size)
        converged, it = False, 0
        while not converged and it < iter_num:
            vec = dat[cur].mean(axis=0) - dat[is_nt].mean(axis=0)
            vv = float(vec @ vec)
            if vv == 0 or cur.sum() < 2:
                break
            pvec = dat @ vec / vv
            if it == 0:  # Seurat's Tool(object, "RunMixscape")[[target]][[split]], pertpy's uns["mixscape"]
                sp_lab = np.full(allc.size, "all", dtype=object) if split is None else split[allc]
                scores.append(pd.DataFrame({"cell": allc, "target": tgt, "split": sp_lab, "pvec": pvec,
                                            "label": np.where(is_g, tgt, control)}))
            mu_nt, var_nt = pvec[is_nt].mean(), max(pvec[is_nt].var(ddof=1), 1e-12)
            mu_g, var_g = pvec[cur].mean(), max(pvec[cur].var(ddof=1), 1e-12)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mm = gmm(n_components=2, covariance_type="spherical", means_init=[[mu_nt], [mu_g]],
                         precisions_init=[1 / var_nt, 1 / var_g], weights_init=[0.5, 0.5],
                         init_params="random", max_iter=5000, random_state=seed,
                         fixed_mean=mu_nt, fixed_var=var_nt).fit(pvec.reshape(-1, 1))
            m1, m2 = float(mm.means_[0, 0]), float(mm.means_[1, 0])
            v1, v2 = float(mm.covariances_[0]), float(mm.covariances_[1])
            pg = pvec[is_g]
            # Seurat: posterior from the likelihood ratio of the two components (no mixing weights)
            lr = _norm_logpdf(pg, m1, v1) - _norm_logpdf(pg, m2, v2)
            post = 1.0 / (1.0 + np.exp(np.clip(lr, -700, 700)))
            new = np.zeros_like(cur)
            new[np.flatnonzero(is_g)[post > 0.5]] = True
            if new.sum() < min_de_genes:  # Seurat reuses min.de.genes as the minimum number of KO cells
                new[:] = False
                converged = True
            if np.array_equal(new, cur):
                converged = True
            cur = new
            it += 1
        ko = cur[is_g]
        cls[orig] = np.where(ko, f"{tgt} {perturbation_type}", f"{tgt} NP")
        pko[orig] = post
        row.update(n_ko=int(ko.sum()), n_np=int((~ko).sum()), ko_fraction=float(ko.mean()) if ko.size else 0.0,
                   iterations=it)
        rows.append(row)
    glob = np.array([c.split(" ")[-1] for c in cls], dtype=object)  # pertpy; Seurat the same for these labels
    unscored = ~nt & ~np.isin(cond, list(targets))  # targets left out by `perturbed`, or no label
    glob[unscored] = None
    pko[unscored] = np.nan
    table = pd.DataFrame(rows, columns=["target", "n_cells", "n_de_genes", "n_ko", "n_np", "ko_fraction",
                                        "iterations", "status"])
    table["iterations"] = table["iterations"].fillna(0).astype(int)
    table = table.sort_values("ko_fraction", ascending=False, kind="stable").reset_index(drop=True)
    extra = {"de_genes": {t: [str(var_names[i]) for i in de[t]] for t in targets if de.get(t) is not None
                          and len(de[t])}}
    pv = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(
        {"cell": np.zeros(0, int), "target": [], "split": [], "pvec": np.zeros(0), "label": []})
    return cls.astype(str), glob, pko, table, extra, sig, pv


def _mixscape_markers(x, var_names, cond, control, targets, *, logfc_threshold, pval_cutoff, min_pct,
                      min_de_genes) -> dict[str, np.ndarray]:
    import anndata as ad
    import scanpy as sc

    keep = np.isin(cond, list(targets) + [control])
    a = ad.AnnData(X=x[keep], obs=pd.DataFrame({"g": pd.Categorical(cond[keep])},
                                               index=pd.Index(np.arange(int(keep.sum())).astype(str))))
    a.var_names = var_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(a, "g", groups=list(targets), reference=control, method="wilcoxon",
                                corr_method="bonferroni", use_raw=False, tie_correct=False)
    rg = a.uns["rank_genes_groups"]
    idx = {gn: i for i, gn in enumerate(var_names)}
    xk = a.X
    ntm = (a.obs["g"] == control).to_numpy()
    e_nt = np.asarray(xk[ntm].expm1().mean(axis=0)).ravel()
    pct_nt = np.asarray((xk[ntm] > 0).mean(axis=0)).ravel()
    out = {}
    for t in targets:
        m = (a.obs["g"] == t).to_numpy()
        if m.sum() == 0:
            out[t] = np.zeros(0, int)
            continue
        e_t = np.asarray(xk[m].expm1().mean(axis=0)).ravel()
        pct_t = np.asarray((xk[m] > 0).mean(axis=0)).ravel()
        lfc = np.log2(e_t + 1) - np.log2(e_nt + 1)  # Seurat 4 avg_log2FC
        names = np.asarray(rg["names"][t]).astype(str)
        padj = np.asarray(rg["pvals_adj"][t], dtype=float)
        gi = np.array([idx[nm] for nm in names])
        ok = ((padj < pval_cutoff) & (np.abs(lfc[gi]) >= logfc_threshold)
              & (np.maximum(pct_t[gi], pct_nt[gi]) >= min_pct))
        sel = np.sort(gi[ok])
        out[t] = sel if sel.size >= min_de_genes else np.zeros(0, int)
    return out


