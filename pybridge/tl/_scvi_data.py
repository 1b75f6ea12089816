"""scVI model input and the saved-model format (used by :mod:`pybridge.tl._scvi` and by jobs
that reuse a saved model: query mapping, annotation, in-silico deletion).

- input checks and preparation: where counts came from (for messages), batch and covariate
  columns, batch-aware highly variable genes (:func:`pybridge.pp.variable_genes`,
  ``flavor="seurat_v3"``, Stuart et al. 2019), a private float32 copy of the training genes' counts;
- the saved-model directory: :func:`read_model_info`, :func:`model_anndata`, :func:`save_model`.

Saved-model directory (``save_path``)
-------------------------------------
``integrate_scvi(..., save_path=DIR)`` writes:

- ``DIR/model.pt``: the scvi-tools model (``model.save(DIR)``; state dict, training
  genes in order, setup registry). Load it with ``scvi.model.SCVI.load(DIR, adata=...)``
  (``SCANVI`` when ``model_class`` below says so).
- ``DIR/pybridge_scvi.json``: what is needed to rebuild the model's input, see
  :data:`MODEL_INFO_FILE`. Keys: ``format`` (``"pybridge-scvi/1"``), ``model_class``
  (``"SCVI"`` or ``"SCANVI"``), ``genes`` (the training genes, in the model's order),
  ``batch_key``, ``batches`` (training batch values), ``labels_key``, ``labels``,
  ``unlabeled_category``, ``categorical_covariate_keys``, ``continuous_covariate_keys``,
  ``key_added``, ``params`` (the call's parameters), ``scvi_tools_version``,
  ``pybridge_version``.

The model's input AnnData has raw counts of exactly ``genes`` (in that order) in ``X``
(no layer), and obs columns ``batch_key`` (values as strings, from ``batches``), the
covariate columns, and for SCANVI ``labels_key``. :func:`model_anndata` builds it from any
AnnData with the right genes and columns.
"""

from __future__ import annotations

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_counts, check_obs_key, get_matrix, logger, shared_genes

MODEL_INFO_FILE = "pybridge_scvi.json"
"""Name of the JSON file written beside ``model.pt`` in a saved-model directory."""

_FORMAT = "pybridge-scvi/1"


# ----------------------------------------------------------------------------- input


def counts_source(adata, layer: str | None) -> tuple[str, str]:
    """(name, hint) for error messages: where the matrix came from and where counts live."""
    meta = adata.uns.get("pybridge", {}) if hasattr(adata, "uns") else {}
    if layer is None and isinstance(meta, dict) and "X_layer" in meta:  # came from R (Seurat)
        slot, assay = str(meta.get("X_layer")), str(meta.get("assay", "RNA"))
        return (f"the '{slot}' slot of assay '{assay}'",
                "the Seurat 'counts' slot/layer must hold raw UMI counts (e.g. CreateSeuratObject(counts = "
                "<raw matrix>)); pass assay = '<assay with raw counts>' if another assay has them")
    name = "X" if layer is None else f"layers[{layer!r}]"
    others = [k for k in adata.layers.keys() if k != layer]
    if "counts" in others:
        hint = "pass layer='counts'"
    elif others:
        hint = f"pass layer= naming the raw-count layer (layers that exist: {', '.join(others)})"
    else:
        hint = "put raw counts in X or in a layer and pass layer="
    if adata.raw is not None:
        hint += "; adata.raw.X may hold counts (adata.raw.to_adata())"
    return name, hint


def categorical(values: pd.Series, key: str, what: str) -> pd.Categorical:
    """Observed values of an obs column as a string categorical; NaN -> clear error."""
    na = values.isna().to_numpy()
    if na.any():
        raise ValueError(f"{what} column {key!r} has {int(na.sum())} missing (NA) values; "
                         "fill them or remove those cells first.")
    return pd.Categorical(values.astype(str).to_numpy())


def check_batches(batch: pd.Categorical, key: str, min_cells: int) -> dict[str, int]:
    counts = pd.Series(batch).value_counts().sort_index()
    small = counts[counts < min_cells]
    if len(small):
        shown = ", ".join(f"{k!r} ({v} cells)" for k, v in small.items())
        raise ValueError(
            f"batch column {key!r} has batches with fewer than {min_cells} cells: {shown}. "
            f"scVI needs at least {min_cells} cells per batch to learn its effect; remove or merge those "
            f"batches (or lower min_cells_per_batch)."
        )
    if len(counts) < 2:
        logger.warning("batch column %r has a single value (%s): nothing to integrate; training a plain scVI "
                       "model", key, ", ".join(map(str, counts.index)))
    return {str(k): int(v) for k, v in counts.items()}


def select_genes(X, var_names: pd.Index, batch: pd.Categorical, *, n_top_genes: int,
                  genes: Sequence[str] | None, batch_key: str) -> tuple[list[str], float | None]:
    """Training genes, in ``var_names`` order: given ``genes``, or batch-aware seurat_v3 HVGs
    (and the loess span used, ``None`` without HVG selection)."""
    if genes is not None:
        genes = [str(g) for g in genes]
        pos = var_names.get_indexer(genes)
        missing = [g for g, p in zip(genes, pos) if p < 0]
        if missing:
            raise ValueError(f"{len(missing)} of the {len(genes)} requested genes are not in the data "
                             f"(e.g. {', '.join(missing[:5])}); {len(genes) - len(missing)} are present.")
        if len(set(genes)) < 2:
            raise ValueError("at least 2 genes are needed to train scVI.")
        return [str(g) for g in var_names[np.sort(np.unique(pos))]], None
    if n_top_genes is None or n_top_genes >= len(var_names):
        logger.info("using all %d genes (n_top_genes=%s >= number of genes)", len(var_names), n_top_genes)
        return [str(g) for g in var_names], None
    from ..pp import variable_genes

    hv, err = None, None
    # seurat_v3 fits a loess of log-variance on log-mean per batch; with small batches the fit
    # can be singular at the default span 0.3: widen it (scanpy's advice)
    for span in (0.3, 0.5, 1.0):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hv = variable_genes(X, int(n_top_genes), flavor="seurat_v3", span=span, var_names=var_names,
                                    batch=np.asarray(batch) if len(batch.categories) > 1 else None,
                                    check_values=False)
            if span != 0.3:
                logger.info("seurat_v3 loess was singular at span 0.3; used span=%s", span)
            break
        except ValueError as e:  # skmisc: "There are other near singularities as well"
            err = e
    if hv is None:
        raise ValueError(f"highly variable gene selection (seurat_v3, per batch of {batch_key!r}) failed: {err}. "
                         "Batches may be too small; pass genes= (R: features =) explicitly.") from err
    chosen = np.asarray(hv["highly_variable"], dtype=bool)
    logger.info("selected %d highly variable genes (seurat_v3, batch_key=%r)", int(chosen.sum()), batch_key)
    return [str(g) for g in var_names[chosen]], span


def subset_counts(X, idx: np.ndarray):
    """Counts of the genes ``idx`` as a NEW float32 matrix (CSR when sparse): never a view of X."""
    if sp.issparse(X):
        out = sp.csr_matrix(X)[:, idx]
        out = sp.csr_matrix(out, dtype=np.float32, copy=True)
    else:
        out = np.array(np.asarray(X)[:, idx], dtype=np.float32, copy=True)
    return out


def check_library(M, what: str) -> None:
    lib = np.asarray(M.sum(axis=1)).ravel()
    empty = int((lib <= 0).sum())
    if empty:
        raise ValueError(f"{empty} cells have no counts in the {M.shape[1]} {what}; scVI needs at least one count "
                         "per cell. Remove them first (Seurat: subset(object, nCount_RNA > 0); scanpy: "
                         "sc.pp.filter_cells(adata, min_counts=1)) or use more genes.")


def training_anndata(adata, X, train_genes: list[str], var_names: pd.Index, *, batch: pd.Categorical,
                     batch_key: str, cat_keys: list[str], cont_keys: list[str], labels_key: str | None,
                     unlabeled_category: str):
    """The model's input: a NEW AnnData with float32 counts of ``train_genes`` (in order) and
    obs columns batch (strings), covariates and, for scANVI, labels (NA -> ``unlabeled_category``).

    Raises
    ------
    ValueError
        Cells without counts in the training genes; NA / non-numeric covariates; no labelled cell.
    """
    import anndata as ad

    M = subset_counts(X, var_names.get_indexer(train_genes))
    check_library(M, "training genes")
    obs = pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), dtype=object))
    obs[batch_key] = batch
    for k in cat_keys:
        obs[k] = categorical(adata.obs[k], k, "covariate")
    for k in cont_keys:
        v = pd.to_numeric(adata.obs[k], errors="coerce")
        if v.isna().any():
            raise ValueError(f"continuous covariate {k!r} has missing or non-numeric values.")
        obs[k] = v.astype(np.float32).to_numpy()
    if labels_key is not None:
        lab = adata.obs[labels_key].astype(object)
        lab = lab.where(lab.notna(), unlabeled_category).astype(str)
        obs[labels_key] = pd.Categorical(lab.to_numpy())
        if (obs[labels_key] != unlabeled_category).sum() == 0:
            raise ValueError(f"labels column {labels_key!r} has no labelled cells (all NA or "
                             f"{unlabeled_category!r}); scANVI needs some known labels.")
    return ad.AnnData(X=M, obs=obs, var=pd.DataFrame(index=pd.Index(train_genes, dtype=object)))


# ----------------------------------------------------------------------------- saved model


def read_model_info(model_path: str | os.PathLike) -> dict:
    """Read ``pybridge_scvi.json`` of a model directory saved by :func:`integrate_scvi`.

    Raises
    ------
    FileNotFoundError
        When ``model_path`` is not such a directory (says which files are expected).
    """
    p = Path(model_path)
    info = p / MODEL_INFO_FILE
    if not p.is_dir() or not (p / "model.pt").exists() or not info.exists():
        have = ", ".join(sorted(x.name for x in p.iterdir())) if p.is_dir() else "(not a directory)"
        raise FileNotFoundError(
            f"{str(p)!r} is not a model directory saved by pybridge integrate_scvi/RunSCVI: it needs "
            f"model.pt and {MODEL_INFO_FILE} (found: {have or '(empty)'}). Train with save_path= "
            "(R: model.dir =) first."
        )
    with open(info) as fh:
        return json.load(fh)


def model_anndata(adata, info: dict, *, layer: str | None = None, batch_key: str | None = None,
                  labels_key: str | None = None, fill_missing_genes: bool = False, min_gene_fraction: float = 0.5):
    """Build the input AnnData of a saved model (raw counts of ``info['genes']`` in X, in order).

    Parameters
    ----------
    adata
        Cells x genes, with raw counts in ``X`` or ``layers[layer]``. Not modified.
    info
        The model's ``pybridge_scvi.json`` (:func:`read_model_info`).
    batch_key
        Column of ``adata.obs`` holding the batch, when it is not named as in the model.
    labels_key
        Column holding known labels (SCANVI), when not named as in the model; absent -> all
        cells get the model's ``unlabeled_category``.
    fill_missing_genes
        Model genes absent from ``adata`` are filled with zeros (query mapping) when at least
        ``min_gene_fraction`` of them are present; otherwise every model gene must be present.

    Returns
    -------
    anndata.AnnData
        New object (own memory): X float32 CSR counts, obs with the model's columns (strings).
    """
    import anndata as ad

    X = get_matrix(adata, layer)
    name, hint = counts_source(adata, layer)
    check_counts(X, name=name, hint=hint)
    genes = list(info["genes"])
    var_names = pd.Index(adata.var_names.astype(str))
    if fill_missing_genes:
        need = max(1, int(np.ceil(min_gene_fraction * len(genes))))
        present = shared_genes(var_names, genes, min_shared=need, what="query and model")
    else:
        present = shared_genes(var_names, genes, min_shared=len(genes), what="data and model")
    src = var_names.get_indexer(present)
    dst = pd.Index(genes).get_indexer(present)
    sub = subset_counts(X, src).tocoo() if sp.issparse(X) else sp.coo_matrix(subset_counts(X, src))
    M = sp.csr_matrix((sub.data, (sub.row, dst[sub.col])), shape=(adata.n_obs, len(genes)), dtype=np.float32)
    if len(present) < len(genes):
        logger.info("%d of %d model genes are missing from the query; filled with zeros",
                    len(genes) - len(present), len(genes))

    obs = pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), dtype=object))
    bkey = info["batch_key"]
    src_key = batch_key or bkey
    if src_key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns)) or "(none)"
        which = "the model's batch_key" if batch_key is None else "batch_key"
        raise KeyError(f"batch column {src_key!r} ({which}) is not in obs. Columns that exist: "
                       f"{cols}. Pass batch_key= (R: batch =) naming the column that holds the batch.")
    obs[bkey] = categorical(adata.obs[src_key], src_key, "batch")
    for k in info.get("categorical_covariate_keys", []) or []:
        check_obs_key(adata, k, what="categorical covariate")
        obs[k] = categorical(adata.obs[k], k, "covariate")
    for k in info.get("continuous_covariate_keys", []) or []:
        check_obs_key(adata, k, what="continuous covariate")
        obs[k] = pd.to_numeric(adata.obs[k]).astype(np.float32).to_numpy()
    if info.get("model_class") == "SCANVI" and info.get("labels_key"):
        lkey, unl = info["labels_key"], info.get("unlabeled_category", "Unknown")
        src_l = labels_key or lkey
        if src_l in adata.obs.columns:
            lab = adata.obs[src_l].astype(object)
            lab = lab.where(lab.notna(), unl).astype(str)
            known = set(info.get("labels", [])) | {unl}
            lab = lab.where(lab.isin(known), unl)  # labels the model does not know are treated as unlabeled
            obs[lkey] = pd.Categorical(lab.to_numpy())
        else:
            obs[lkey] = pd.Categorical([unl] * adata.n_obs)
    out = ad.AnnData(X=M, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=object)))
    return out



def save_model(model, save_path, *, info: dict) -> None:
    import scvi

    import pybridge

    path = Path(save_path)
    model.save(str(path), overwrite=True, save_anndata=False)
    payload = {"format": _FORMAT, **info, "scvi_tools_version": scvi.__version__,
               "pybridge_version": getattr(pybridge, "__version__", "")}
    tmp = path / (MODEL_INFO_FILE + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path / MODEL_INFO_FILE)
    logger.info("saved %s model to %s", info["model_class"], path)
