"""Seurat's standard chain in one call (``run_chain``), on CPU or GPU.

``normalize -> hvg -> scale -> pca -> neighbors -> umap -> clusters``: Seurat's
``NormalizeData -> FindVariableFeatures(vst) -> ScaleData -> RunPCA -> FindNeighbors -> RunUMAP
-> FindClusters`` and scanpy's ``normalize_total -> log1p -> highly_variable_genes(seurat_v3)
-> scale -> pca -> neighbors -> umap -> leiden``.

:func:`run_chain` runs the kernels, argument checks and result writers of the step modules
(:mod:`._normalization`, :mod:`._highly_variable_genes`, :mod:`._scale`, :mod:`._pca`,
:mod:`._neighbors`), the same ones the public step functions call; what it adds is the data
movement: the counts move to the device once, stay sparse through normalisation, log1p and the
variable-gene statistics, only the variable genes are densified for scaling and PCA, and the
results move back once. :func:`chain_inputs` says what a subset of steps reads from the
AnnData, so that a caller (the R package's ``RunPreprocess``) converts only that.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np

from .._core import check_counts, check_number, clamp_n_top, get_matrix, is_verbose, logger
from ._array import Device, host, modules, to_device
from ._docs import doc_batch_key, doc_device, doc_device_raises, doc_n_top_genes, doc_params
from ._highly_variable_genes import _batch_categories, _hvg_table, _write_hvg
from ._neighbors import graph_backend, neighbors, run_leiden, run_umap
from ._normalization import _x_log_normalize
from ._pca import _check_n_comps, _check_solver, _write_pca, _x_pca
from ._scale import _x_scale

CHAIN_STEPS = ("normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters")
_GRAPH_STEPS = ("neighbors", "umap", "clusters")


def _check_steps(steps) -> list[str]:
    if isinstance(steps, str):
        steps = [steps]
    steps = [str(s) for s in steps]
    bad = [s for s in steps if s not in CHAIN_STEPS]
    if bad:
        raise ValueError(f"unknown step(s): {', '.join(bad)}. Steps are: {', '.join(CHAIN_STEPS)}.")
    if not steps:
        raise ValueError(f"steps is empty; choose among: {', '.join(CHAIN_STEPS)}.")
    return [s for s in CHAIN_STEPS if s in steps]


def chain_inputs(steps: Sequence[str] | str) -> dict:
    """What :func:`run_chain` reads from the AnnData for ``steps`` (the steps left out are read).

    Returns
    -------
    dict with ``steps`` (the checked steps, in chain order) and booleans: ``counts`` (``X`` or
    ``layers[layer]``: "normalize" or "hvg" run), ``data`` (log-normalised values: "scale"
    without "normalize"), ``highly_variable`` (``var["highly_variable"]``, all genes when
    absent: "scale" or "pca" without "hvg"), ``scaled`` (``obsm[scaled_key]``: "pca" without
    "scale"), ``pca`` (``obsm["X_pca"]``: "neighbors" without "pca").

    Raises
    ------
    ValueError
        Unknown or no steps.
    """
    s = set(_check_steps(steps))
    return dict(steps=_check_steps(steps), counts=bool(s & {"normalize", "hvg"}),
                data="scale" in s and "normalize" not in s, highly_variable=bool(s & {"scale", "pca"}) and "hvg" not in s,
                scaled="pca" in s and "scale" not in s, pca="neighbors" in s and "pca" not in s)


# ----------------------------------------------------------------------------------------------
# inputs of the steps left out, checked before any work
# ----------------------------------------------------------------------------------------------
def _given_genes(adata) -> np.ndarray:
    if "highly_variable" in adata.var.columns:
        return np.asarray(adata.var["highly_variable"], dtype=bool)
    logger.info("preprocess: no var['highly_variable'] (Seurat: VariableFeatures) and 'hvg' not in steps: "
                "using all genes")
    return np.ones(adata.n_vars, dtype=bool)


def _gene_index(hv: np.ndarray) -> np.ndarray:
    idx = np.flatnonzero(hv)
    if idx.size < 2:
        raise ValueError("fewer than 2 variable genes: run the 'hvg' step or set var['highly_variable'] "
                         "(Seurat: VariableFeatures).")
    return idx


def _given_scaled(adata, scaled_key: str | None, n_genes: int) -> np.ndarray:
    if scaled_key is None or scaled_key not in adata.obsm:
        have = ", ".join(adata.obsm.keys()) or "(none)"
        raise ValueError(f"'pca' without 'scale' needs the scaled variable genes in obsm[{scaled_key!r}] "
                         f"(Seurat: scale.data of the variable features); obsm has: {have}. Add 'scale' to steps.")
    x = np.asarray(adata.obsm[scaled_key])
    if x.shape[1] != n_genes:
        raise ValueError(f"obsm[{scaled_key!r}] has {x.shape[1]} columns but there are {n_genes} variable genes.")
    return x


def _check_graph_inputs(adata, steps: list[str], n_pcs, n_comps: int, cluster_on: str) -> int | None:
    """``n_pcs`` to use (None without graph steps); clear errors for missing PCA / graph."""
    if cluster_on not in ("snn", "connectivities"):
        raise ValueError(f"cluster_on must be 'snn' or 'connectivities', got {cluster_on!r}.")
    if not set(steps) & set(_GRAPH_STEPS):
        return None
    if "neighbors" not in steps:
        graph = "snn" if cluster_on == "snn" and "clusters" in steps else "connectivities"
        if "neighbors" not in adata.uns or graph not in adata.obsp:
            todo = [repr(s) for s in steps if s in _GRAPH_STEPS]
            raise ValueError(f"{' and '.join(todo)} need{'s' if len(todo) == 1 else ''} the neighbour graph "
                             f"(obsp[{graph!r}]): add 'neighbors' to steps.")
        return None
    n_pcs = check_number("n_pcs", n_pcs, integer=True, minimum=1, allow_none=True)
    if "pca" in steps:
        available, where = n_comps, f"n_comps ({n_comps})"
    elif "X_pca" in adata.obsm:
        available = adata.obsm["X_pca"].shape[1]
        where = f"the {available} PCs in obsm['X_pca'] (Seurat: the 'pca' reduction)"
    else:
        have = ", ".join(adata.obsm.keys()) or "(none)"
        raise ValueError("the graph steps need a PCA in obsm['X_pca'] (Seurat: a 'pca' reduction); "
                         f"obsm has: {have}. Add 'pca' to steps.")
    if n_pcs is None:
        return min(30, available)
    if n_pcs > available:
        raise ValueError(f"n_pcs ({n_pcs}) exceeds {where}: the graph uses the first n_pcs PCs.")
    return n_pcs


class _Timer:
    """Seconds per step, and one info line per step when verbose (the chain's progress)."""

    def __init__(self, device: str, steps: list[str], verbose: bool | None):
        self.seconds: dict[str, float] = {}
        self.device, self.steps, self.verbose = device, steps, verbose

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 4)
        if is_verbose(self.verbose):
            at = f" {self.steps.index(name) + 1}/{len(self.steps)}" if name in self.steps else ""
            logger.info("preprocess%s: %s done in %.2fs (%s)", at, name, self.seconds[name], self.device)


@doc_params(doc_n_top_genes=doc_n_top_genes, doc_batch_key=doc_batch_key, doc_device=doc_device,
            doc_device_raises=doc_device_raises)
def run_chain(adata, *, steps: Sequence[str] = CHAIN_STEPS, layer: str | None = None,
              data_layer: str | None = None, target_sum: float = 1e4, n_top_genes: int = 2000,
              batch_key: str | None = None, span: float = 0.3, max_value: float | None = 10,
              n_comps: int = 50, svd_solver: str = "auto", n_oversamples: int = 20,
              n_iter: int = 7, n_pcs: int | None = None, n_neighbors: int = 20, snn_prune: float = 1 / 15,
              min_dist: float = 0.3, resolution: float = 0.8, cluster_key: str = "leiden",
              cluster_on: Literal["snn", "connectivities"] = "snn", scaled_key: str | None = "X_scaled",
              dtype=None, random_state: int = 0, device: Device = "auto", copy: bool = False,
              verbose: bool | None = None):
    """Seurat's standard chain in one call, on CPU or GPU: normalise, variable genes, scale, PCA, graph, UMAP, clusters.

    The equivalent of Seurat's ``NormalizeData -> FindVariableFeatures(vst) -> ScaleData ->
    RunPCA -> FindNeighbors -> RunUMAP -> FindClusters`` and of scanpy's
    ``normalize_total -> log1p -> highly_variable_genes(seurat_v3) -> scale -> pca -> neighbors
    -> umap -> leiden``, with the kernels of :func:`normalize_total`, :func:`log1p`,
    :func:`highly_variable_genes`, :func:`scale`, :func:`pca` and :func:`neighbors`. The counts
    move to the device once; normalisation, log1p and the variable-gene statistics run on the
    sparse matrix; only the variable genes are densified for scaling and PCA; the results move
    back once. The graph steps use rapids-singlecell on a GPU (when installed) and scanpy
    otherwise. Every argument and input is checked before any work.

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` (or ``layers[layer]``). Not written into: a read-only
        ``X`` (a view of R memory) is fine.
    steps
        Subset of ``("normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters")``, run
        in this order. A step that is left out is taken from ``adata`` (:func:`chain_inputs`):
        log-normalised values from ``layers[data_layer]`` (or ``X``) without ``"normalize"``;
        ``var["highly_variable"]`` (all genes when absent) without ``"hvg"``;
        ``obsm[scaled_key]`` without ``"scale"``; ``obsm["X_pca"]`` without ``"pca"``; the
        neighbour graph without ``"neighbors"``.
    layer
        Where the counts are (``None``: ``X``).
    data_layer
        Where log-normalised values are when ``"normalize"`` is not run (``None``: ``X``).
    target_sum
        Total per cell after normalisation (Seurat's ``scale.factor``).
    {doc_n_top_genes}
    {doc_batch_key}
    span
        Loess span of the vst (see :func:`highly_variable_genes`).
    max_value
        Clip of the scaled values (Seurat's ``scale.max``); ``None``: no clipping.
    n_comps, svd_solver, n_oversamples, n_iter
        PCA: see :func:`pca`.
    n_pcs
        Number of leading PCs used for the graph (Seurat: ``dims = 1:n_pcs``); ``None``: 30, or
        all PCs when there are fewer. More than there are PCs is an error.
    n_neighbors
        Neighbours per cell, the cell included (Seurat: ``k.param = 20``).
    snn_prune
        Shared-nearest-neighbour graph: Jaccard weights below this are set to 0 (Seurat's
        ``prune.SNN``).
    min_dist
        UMAP ``min_dist`` (Seurat's ``RunUMAP`` default 0.3).
    resolution
        Leiden resolution (higher = more clusters).
    cluster_key
        ``obs`` column for the clusters (categorical, labels ``"0", "1", ...`` by decreasing size).
    cluster_on
        Graph to cluster: ``"snn"`` (as Seurat's ``FindClusters``) or ``"connectivities"`` (scanpy).
    scaled_key
        ``obsm`` key where the scaled variable genes (cells x variable genes, dense) are kept;
        ``None`` to not keep them.
    dtype
        Float dtype on the device (default: the input's float dtype; float32 for integers).
    random_state
        Seed for PCA, UMAP and Leiden.
    {doc_device}
    copy
        Work on and return a copy.
    verbose
        One line per step (seconds) and per batch of the vst; ``None`` follows
        ``pybridge.settings.verbosity``.

    Returns
    -------
    ``None`` (or the copy). Written: ``X`` = log-normalised values (sparse, all genes;
    ``layers["counts"]`` keeps the counts when they were in ``X``), the ``var`` columns of
    :func:`highly_variable_genes`, ``var["mean"]``/``var["std"]`` (scaling statistics, NaN
    outside the variable genes), ``obsm[scaled_key]``, ``obsm["X_pca"]``/``varm["PCs"]``/
    ``uns["pca"]``, ``obsp["distances"/"connectivities"/"knn"/"snn"]``/``uns["neighbors"]``,
    ``obsm["X_umap"]``, ``obs[cluster_key]``, and ``uns["preprocess"]`` (device, steps, seconds
    per step, the parameters used, e.g. ``n_top_genes`` after clamping and ``n_pcs``).

    Raises
    ------
    ValueError
        Unknown step, non-count input for normalisation / vst, missing inputs of a step that
        is not run (the message says what to run or where the data are expected), ``n_pcs``
        above the number of PCs, out-of-range numbers.
    {doc_device_raises}
    """
    need = chain_inputs(steps)
    steps = need["steps"]
    xp, sps, dev = modules(device)
    # -- every check before any work ----------------------------------------------------------
    batches = None
    if "hvg" in steps:
        n_top_genes = clamp_n_top("n_top_genes", n_top_genes, adata.n_vars)
        batches = _batch_categories(adata, batch_key)
    if "pca" in steps:
        svd_solver = _check_solver(svd_solver, xp)
        n_comps = check_number("n_comps", n_comps, integer=True, minimum=1)
    counts = data = scaled = hv = None
    if need["counts"]:
        counts = get_matrix(adata, layer)
        check_counts(counts, name="X" if layer is None else f"layers[{layer!r}]",
                     hint="pass layer='counts' (Seurat: the counts slot)")
    if need["data"]:
        data = get_matrix(adata, data_layer)
    if need["highly_variable"]:
        hv = _given_genes(adata)
    n_genes = n_top_genes if "hvg" in steps else (_gene_index(hv).size if hv is not None else adata.n_vars)
    if need["scaled"]:
        scaled = _given_scaled(adata, scaled_key, n_genes)
    if "pca" in steps:
        n_comps = _check_n_comps(n_comps, (adata.n_obs, n_genes))
    n_pcs = _check_graph_inputs(adata, steps, n_pcs, n_comps, cluster_on)
    if copy:
        adata = adata.copy()
    run = _Timer(dev, steps, verbose)
    t_all = time.perf_counter()

    # -- array steps on the device ------------------------------------------------------------
    counts_dev = data_dev = hvg_df = scaled_dev = pca_out = mean = std = None
    if counts is not None:
        with run("to_device"):
            counts_dev = to_device(counts, xp, sps, dtype)  # the one host -> device move
    if "normalize" in steps:
        with run("normalize"):
            data_dev = _x_log_normalize(counts_dev, xp, sps, target_sum)
    if "hvg" in steps:
        with run("hvg"):
            hvg_df = _hvg_table(counts_dev, xp, sps, batches, n_top_genes, "seurat_v3", span, adata.var_names,
                                verbose)
        hv = hvg_df["highly_variable"].to_numpy()
    counts_dev = None
    hv_idx = _gene_index(hv) if hv is not None and ("scale" in steps or "pca" in steps) else None
    if "scale" in steps:
        with run("scale"):
            src = (data_dev[:, xp.asarray(hv_idx)] if data_dev is not None
                   else to_device(data[:, hv_idx], xp, sps, dtype))
            scaled_dev, mean, std = _x_scale(src, xp, sps, zero_center=True, max_value=max_value)
            del src
    if "pca" in steps:
        with run("pca"):
            if scaled_dev is None:
                scaled_dev = to_device(scaled, xp, sps, dtype)
            pca_out = _x_pca(scaled_dev, xp, sps, n_comps=n_comps, zero_center=True, svd_solver=svd_solver, random_state=random_state,
                             n_oversamples=n_oversamples, n_iter=n_iter)

    # -- the one device -> host move, and the writes --------------------------------------------
    if set(steps) & {"normalize", "hvg", "scale", "pca"}:
        with run("to_host"):
            norm_host = host(data_dev) if data_dev is not None else None
            scaled_host = host(scaled_dev) if "scale" in steps else None
            pca_host = tuple(v if isinstance(v, float) else host(v) for v in pca_out) if pca_out else None
            mean_h, std_h = (host(mean), host(std)) if mean is not None else (None, None)
            data_dev = scaled_dev = None
        if norm_host is not None:
            if layer is None and "counts" not in adata.layers:
                adata.layers["counts"] = adata.X
            adata.X = norm_host
            adata.uns["log1p"] = {"base": None}
        if hvg_df is not None:
            _write_hvg(adata, hvg_df, "seurat_v3")
        if scaled_host is not None:
            m, s = np.full(adata.n_vars, np.nan), np.full(adata.n_vars, np.nan)
            m[hv_idx], s[hv_idx] = mean_h, std_h
            adata.var["mean"], adata.var["std"] = m, s
            if scaled_key is not None:
                adata.obsm[scaled_key] = scaled_host
        if pca_host is not None:
            _write_pca(adata, *pca_host, hv, None, dict(zero_center=True, svd_solver=svd_solver,
                                                        random_state=random_state, mask_var="highly_variable",
                                                        use_highly_variable=True))

    # -- graph steps (the backend calls of pybridge.pp.neighbors, tl.umap, tl.leiden) -----------
    if "neighbors" in steps:
        with run("neighbors"):
            neighbors(adata, n_neighbors=n_neighbors, n_pcs=n_pcs, use_rep="X_pca", snn=True, snn_prune=snn_prune,
                      random_state=random_state, device=device)
    if "umap" in steps or "clusters" in steps:
        mod, name = graph_backend(device)
        if "umap" in steps:
            with run("umap"):
                run_umap(adata, mod, min_dist=min_dist, random_state=random_state)
        if "clusters" in steps:
            with run("clusters"):
                run_leiden(adata, mod, name, resolution=resolution, key_added=cluster_key,
                           obsp="snn" if cluster_on == "snn" else None, random_state=random_state)

    run.seconds["total"] = round(time.perf_counter() - t_all, 4)
    adata.uns["preprocess"] = dict(
        device=dev, steps=list(steps), seconds=run.seconds,
        params=dict(target_sum=target_sum, n_top_genes=int(n_top_genes), batch_key=batch_key or "",
                    span=span, max_value=max_value if max_value is not None else "none",
                    n_comps=int(n_comps), svd_solver=svd_solver, n_pcs=int(n_pcs) if n_pcs is not None else "none",
                    n_neighbors=int(n_neighbors), snn_prune=snn_prune, min_dist=min_dist,
                    resolution=resolution, cluster_on=cluster_on, random_state=random_state),
    )
    return adata if copy else None
