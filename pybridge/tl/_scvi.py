"""scVI / scANVI integration and scArches query mapping (scvi-tools).

Methods
-------
- scVI: Lopez et al. 2018, *Deep generative modeling for single-cell transcriptomics*,
  Nat Methods 15:1053. scvi-tools: Gayoso et al. 2022, Nat Biotechnol 40:163.
- scANVI: Xu et al. 2021, *Probabilistic harmonization and annotation of single-cell
  transcriptomics data with deep generative models*, Mol Syst Biol 17:e9620.
- scArches query mapping: Lotfollahi et al. 2022, *Mapping single-cell data to reference
  atlases by transfer learning*, Nat Biotechnol 40:121.
- Batch-aware highly variable genes: Stuart et al. 2019 (Seurat v3 variance-stabilising
  flavour), as implemented by :func:`scanpy.pp.highly_variable_genes` (``flavor="seurat_v3"``).

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

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._device import lightning_kwargs, resolve_device
from .._core import check_counts, check_obs_key, get_matrix, logger, shared_genes

MODEL_INFO_FILE = "pybridge_scvi.json"
"""Name of the JSON file written beside ``model.pt`` in a saved-model directory."""

_FORMAT = "pybridge-scvi/1"
_METHODS = ("scvi", "scanvi")
_LIKELIHOODS = ("nb", "zinb", "poisson")
_NOISY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi")


# ----------------------------------------------------------------------------- helpers


class _DropTips(logging.Filter):
    """Lightning's advertising line ("Tip: ... litlogger") is not a message for users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.getMessage())


_TIPS = _DropTips()
_TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@contextlib.contextmanager
def _quiet(verbose: bool):
    """Silence Lightning / scvi-tools chatter unless ``verbose``; always hide their warnings
    about dataloader workers and logging intervals (not actionable for users)."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _TIP_LOGGERS:
        logging.getLogger(name).addFilter(_TIPS)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            warnings.filterwarnings("ignore", message=r".*(num_workers|log_every_n_steps|LeafSpec).*")
            if not verbose:
                warnings.filterwarnings("ignore", module=r"scvi(\.|$)")
                for name in _NOISY_LOGGERS:
                    logging.getLogger(name).setLevel(logging.WARNING)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for name in _TIP_LOGGERS:
            logging.getLogger(name).removeFilter(_TIPS)


def _counts_source(adata, layer: str | None) -> tuple[str, str]:
    """(name, hint) for error messages: where the matrix came from and where counts live."""
    meta = adata.uns.get("pybridge", {}) if hasattr(adata, "uns") else {}
    if layer is None and isinstance(meta, dict) and "X_layer" in meta:  # came from R (Seurat)
        slot, assay = str(meta.get("X_layer")), str(meta.get("assay", "RNA"))
        return (f"the '{slot}' slot of assay '{assay}'",
                f"the Seurat 'counts' slot/layer must hold raw UMI counts (e.g. CreateSeuratObject(counts = "
                f"<raw matrix>)); pass assay = '<assay with raw counts>' if another assay has them")
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


def _categorical(values: pd.Series, key: str, what: str) -> pd.Categorical:
    """Observed values of an obs column as a string categorical; NaN -> clear error."""
    na = values.isna().to_numpy()
    if na.any():
        raise ValueError(f"{what} column {key!r} has {int(na.sum())} missing (NA) values; "
                         "fill them or remove those cells first.")
    return pd.Categorical(values.astype(str).to_numpy())


def _check_batches(batch: pd.Categorical, key: str, min_cells: int) -> dict[str, int]:
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


def _select_genes(X, var_names: pd.Index, batch: pd.Categorical, *, n_top_genes: int,
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
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=X, obs=pd.DataFrame({"batch": batch}, index=pd.RangeIndex(X.shape[0]).astype(str)),
                     var=pd.DataFrame(index=pd.Index(var_names.astype(str), dtype=object)))
    hv, err = None, None
    # seurat_v3 fits a loess (scikit-misc) of log-variance on log-mean per batch; with small
    # batches the fit can be singular at scanpy's default span 0.3: widen it (scanpy's advice).
    for span in (0.3, 0.5, 1.0):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hv = sc.pp.highly_variable_genes(tmp, flavor="seurat_v3", n_top_genes=int(n_top_genes),
                                                 batch_key="batch" if len(batch.categories) > 1 else None,
                                                 inplace=False, subset=False, span=span)
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


def _subset_counts(X, idx: np.ndarray):
    """Counts of the genes ``idx`` as a NEW float32 matrix (CSR when sparse): never a view of X."""
    if sp.issparse(X):
        out = sp.csr_matrix(X)[:, idx]
        out = sp.csr_matrix(out, dtype=np.float32, copy=True)
    else:
        out = np.array(np.asarray(X)[:, idx], dtype=np.float32, copy=True)
    return out


def _check_library(M, what: str) -> None:
    lib = np.asarray(M.sum(axis=1)).ravel()
    empty = int((lib <= 0).sum())
    if empty:
        raise ValueError(f"{empty} cells have no counts in the {M.shape[1]} {what}; scVI needs at least one count "
                         "per cell. Remove them first (Seurat: subset(object, nCount_RNA > 0); scanpy: "
                         "sc.pp.filter_cells(adata, min_counts=1)) or use more genes.")


def _train_kwargs(device: str, devices, strategy, *, max_epochs, batch_size: int, progress_bar: bool,
                  train_kwargs: dict | None) -> dict:
    """Keyword arguments for ``model.train()``: device via pybridge._device, DDP passthrough."""
    kw = dict(lightning_kwargs(device))
    if devices is not None:
        kw["devices"] = devices
    if strategy is not None:
        kw["strategy"] = strategy
    kw.update(max_epochs=None if max_epochs is None else int(max_epochs), batch_size=int(batch_size),
              enable_progress_bar=bool(progress_bar))
    kw.update(train_kwargs or {})
    return kw


def _load_device_kwargs(device: str) -> dict:
    """``accelerator``/``device`` for scvi-tools ``load`` / ``load_query_data`` (one device)."""
    kw = lightning_kwargs(device)
    dev = kw["devices"]
    return {"accelerator": kw["accelerator"], "device": dev[0] if isinstance(dev, list) else "auto"}


def _clean(d: dict) -> dict:
    """uns/json-storable copy: drop None, lists -> lists of str/num."""
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = [x if isinstance(x, (int, float, bool)) else str(x) for x in v]
            if not v:
                continue
        elif not isinstance(v, (int, float, bool, str)):
            v = str(v)
        out[k] = v
    return out


def _uns_value(d: dict) -> dict:
    return {k: (np.array(v, dtype=object) if isinstance(v, list) and v and isinstance(v[0], str)
                else np.array(v) if isinstance(v, list) else v) for k, v in d.items()}


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
    name, hint = _counts_source(adata, layer)
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
    sub = _subset_counts(X, src).tocoo() if sp.issparse(X) else sp.coo_matrix(_subset_counts(X, src))
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
    obs[bkey] = _categorical(adata.obs[src_key], src_key, "batch")
    for k in info.get("categorical_covariate_keys", []) or []:
        check_obs_key(adata, k, what="categorical covariate")
        obs[k] = _categorical(adata.obs[k], k, "covariate")
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


# ----------------------------------------------------------------------------- integrate


def integrate_scvi(
    adata,
    *,
    batch_key: str,
    layer: str | None = None,
    n_top_genes: int = 2000,
    genes: Sequence[str] | None = None,
    categorical_covariate_keys: Sequence[str] | None = None,
    continuous_covariate_keys: Sequence[str] | None = None,
    n_latent: int = 10,
    n_layers: int = 1,
    n_hidden: int = 128,
    gene_likelihood: str = "nb",
    max_epochs: int | None = None,
    scanvi_max_epochs: int | None = None,
    kl_warmup_epochs: int | None = None,
    batch_size: int = 128,
    device: str = "auto",
    devices=None,
    strategy=None,
    labels_key: str | None = None,
    unlabeled_category: str = "Unknown",
    method: str = "scvi",
    save_path: str | os.PathLike | None = None,
    normalized_key: str | None = None,
    min_cells_per_batch: int = 10,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    return_model: bool = False,
    progress_bar: bool = False,
    key_added: str = "X_scVI",
    random_state: int = 0,
):
    """Integrate batches with scVI (or scANVI) on raw counts; latent space in ``obsm[key_added]``.

    Batch-aware highly variable genes are chosen on the counts (scanpy ``flavor="seurat_v3"``
    with ``batch_key``), an scvi-tools :class:`~scvi.model.SCVI` model is trained on a copy
    restricted to those genes (the caller's matrices are never written), and the latent means
    are stored. With ``method="scanvi"`` the scVI model is then refined into
    :class:`~scvi.model.SCANVI` with ``labels_key`` (cells labelled ``unlabeled_category`` or
    NA are unlabelled) and label predictions are stored too.

    Parameters
    ----------
    adata
        AnnData, cells x genes (``n_obs`` x ``n_vars``), raw integer counts in ``X`` or
        ``layers[layer]`` (any float/int dtype; sparse or dense).
    batch_key
        ``obs`` column with the batch (sample, chemistry, donor...). Values are used as strings.
    layer
        Layer with raw counts; ``None`` = ``X``.
    n_top_genes
        Number of highly variable genes to train on; all genes when ``>= n_vars``.
    genes
        Explicit training genes (overrides ``n_top_genes``); must all be in ``var_names``.
    categorical_covariate_keys, continuous_covariate_keys
        Extra ``obs`` columns regressed out by the decoder (scvi-tools ``setup_anndata``).
    n_latent, n_layers, n_hidden
        Latent dimensions, hidden layers and units per layer of encoder/decoder.
    gene_likelihood
        ``"nb"`` (default; negative binomial), ``"zinb"`` or ``"poisson"``.
    max_epochs
        Training epochs; ``None`` = scvi-tools' heuristic ``min(400, round(400 * 20000 / n_obs))``.
    scanvi_max_epochs
        scANVI epochs after scVI pre-training; ``None`` = scvi-tools' heuristic (2-10).
    kl_warmup_epochs
        Epochs over which the KL weight rises from 0 to 1 (scvi-tools ``n_epochs_kl_warmup``);
        ``None`` = scvi-tools' default (400). With short training (``max_epochs`` well below
        400) a shorter warm-up (e.g. ``max_epochs // 5``) gives a regularised, better-mixed
        latent space.
    batch_size
        Minibatch size (cells).
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; resolved by
        :func:`pybridge._device.lightning_kwargs`.
    devices, strategy
        Passed unchanged to the Lightning ``Trainer`` (through scvi-tools ``train()``), e.g.
        ``device="cuda", devices=4, strategy="ddp_find_unused_parameters_true"`` trains with
        distributed data parallel on 4 GPUs (scvi-tools then uses a distributed sampler).
        Lightning's ``"ddp"`` strategies re-launch the running *script*, so run them from a
        Python script (``python train.py``), not from R/reticulate or a notebook; from a
        notebook use ``"ddp_notebook"``. ``devices`` overrides the count chosen by ``device``.
        Multi-GPU training is not tested here (no GPU in CI); the plumbing is.
    labels_key
        ``obs`` column with cell labels, used by ``method="scanvi"`` only.
    unlabeled_category
        Label value meaning "unknown" for scANVI (NA labels are mapped to it too).
    method
        ``"scvi"`` or ``"scanvi"``.
    save_path
        Directory to save the trained model into (created; ``model.pt`` overwritten) together
        with ``pybridge_scvi.json`` (training genes, keys, parameters): see the module docstring.
        :func:`map_query_scvi` maps new cells into it.
    normalized_key
        When given, ``obsm[normalized_key]`` gets the model's denoised, batch-corrected
        expression (:meth:`~scvi.model.SCVI.get_normalized_expression`, library size 1e4) as
        a ``pandas.DataFrame`` of cells x training genes (float32). An ``obsm`` entry rather
        than a layer because the model only knows its training genes.
    min_cells_per_batch
        Batches with fewer cells raise ``ValueError``.
    model_kwargs
        Extra arguments for the :class:`~scvi.model.SCVI` constructor, e.g. the scArches
        settings recommended for later query mapping: ``dict(use_layer_norm="both",
        use_batch_norm="none", encode_covariates=True, dropout_rate=0.2)``.
    train_kwargs
        Extra arguments for ``train()`` (``plan_kwargs``, ``early_stopping``,
        ``datasplitter_kwargs``...).
    return_model
        Return the trained scvi-tools model.
    progress_bar
        Show the training progress bar and Lightning's messages; silent otherwise.
    key_added
        ``obsm`` key for the latent space and ``uns`` key for parameters.
    random_state
        Seed (``scvi.settings.seed``: Python, NumPy and torch generators).

    Returns
    -------
    ``None``, or the trained ``scvi.model.SCVI`` / ``SCANVI`` when ``return_model``. Writes:

    - ``obsm[key_added]``: float32 array ``n_obs x n_latent``, latent means.
    - ``uns[key_added]``: ``{"params": {...}, "genes": training genes, "batches": {value: n_cells},
      "elbo_train": per-epoch training ELBO}``.
    - scANVI: ``obs[f"{labels_key}_scanvi"]`` (predicted label, categorical) and
      ``obs[f"{labels_key}_scanvi_prob"]`` (its probability).
    - ``obsm[normalized_key]`` when asked.

    Raises
    ------
    KeyError
        A key (batch, covariate, labels, layer) is not in ``obs``/``layers`` (the message lists
        what exists).
    ValueError
        Non-integer (log-normalised), negative or NaN values; NA batch values; a batch with
        fewer than ``min_cells_per_batch`` cells; cells without counts in the training genes;
        unknown ``method`` / ``gene_likelihood``.
    RuntimeError
        ``device="cuda"`` without a visible GPU.
    """
    import anndata as ad
    import scvi

    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}.")
    if gene_likelihood not in _LIKELIHOODS:
        raise ValueError(f"gene_likelihood must be one of {', '.join(_LIKELIHOODS)}, got {gene_likelihood!r}.")
    if method == "scanvi" and labels_key is None:
        raise ValueError("method='scanvi' needs labels_key= (the obs column with cell labels).")
    if method == "scvi" and labels_key is not None:
        raise ValueError("labels_key is used by method='scanvi' only; pass method='scanvi' to train scANVI "
                         "with these labels (R: RunSCVI(labels = ...) does this).")
    resolved = resolve_device(device)  # early, clear error when CUDA is missing
    check_obs_key(adata, batch_key, what="batch column")
    cat_keys = [str(k) for k in (categorical_covariate_keys or [])]
    cont_keys = [str(k) for k in (continuous_covariate_keys or [])]
    for k in cat_keys:
        check_obs_key(adata, k, what="categorical covariate")
    for k in cont_keys:
        check_obs_key(adata, k, what="continuous covariate")
    if labels_key is not None:
        check_obs_key(adata, labels_key, what="labels column")

    X = get_matrix(adata, layer)
    name, hint = _counts_source(adata, layer)
    check_counts(X, name=name, hint=hint)
    batch = _categorical(adata.obs[batch_key], batch_key, "batch")
    batch_sizes = _check_batches(batch, batch_key, int(min_cells_per_batch))

    var_names = pd.Index(adata.var_names.astype(str))
    train_genes, hvg_span = _select_genes(X, var_names, batch, n_top_genes=n_top_genes, genes=genes, batch_key=batch_key)
    idx = var_names.get_indexer(train_genes)
    M = _subset_counts(X, idx)
    _check_library(M, "training genes")

    obs = pd.DataFrame(index=pd.Index(adata.obs_names.astype(str), dtype=object))
    obs[batch_key] = batch
    for k in cat_keys:
        obs[k] = _categorical(adata.obs[k], k, "covariate")
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
    mdata = ad.AnnData(X=M, obs=obs, var=pd.DataFrame(index=pd.Index(train_genes, dtype=object)))

    if kl_warmup_epochs is not None:
        train_kwargs = dict(train_kwargs or {})
        train_kwargs["plan_kwargs"] = {**train_kwargs.get("plan_kwargs", {}), "n_epochs_kl_warmup": int(kl_warmup_epochs)}
    tkw = _train_kwargs(device, devices, strategy, max_epochs=max_epochs, batch_size=batch_size,
                        progress_bar=progress_bar, train_kwargs=train_kwargs)
    with _quiet(progress_bar):
        scvi.settings.seed = int(random_state)
        scvi.model.SCVI.setup_anndata(mdata, batch_key=batch_key, categorical_covariate_keys=cat_keys or None,
                                      continuous_covariate_keys=cont_keys or None)
        model = scvi.model.SCVI(mdata, n_latent=int(n_latent), n_layers=int(n_layers), n_hidden=int(n_hidden),
                                gene_likelihood=gene_likelihood, **(model_kwargs or {}))
        logger.info("training scVI on %d cells x %d genes (%d batches) on %s", mdata.n_obs, mdata.n_vars,
                    len(batch_sizes), resolved)
        model.train(**tkw)
        epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else tkw["max_epochs"]
        elbo = np.asarray(model.history["elbo_train"]).ravel().astype(np.float64) \
            if "elbo_train" in model.history else np.array([])
        pred = prob = None
        if method == "scanvi":
            model = scvi.model.SCANVI.from_scvi_model(model, unlabeled_category=unlabeled_category,
                                                      labels_key=labels_key)
            skw = dict(tkw, max_epochs=None if scanvi_max_epochs is None else int(scanvi_max_epochs))
            logger.info("training scANVI with labels %r", labels_key)
            model.train(**skw)
            soft = model.predict(soft=True)
            pred = pd.Categorical(np.asarray(soft.columns)[np.argmax(soft.to_numpy(), axis=1)].astype(str))
            prob = soft.to_numpy().max(axis=1).astype(np.float32)
        latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
        norm = None
        if normalized_key is not None:
            norm = model.get_normalized_expression(library_size=1e4, return_numpy=True)
            norm = pd.DataFrame(np.asarray(norm, dtype=np.float32), index=adata.obs_names,
                                columns=pd.Index(train_genes, dtype=object))

    params = _clean({
        "method": method, "model_class": type(model).__name__, "batch_key": batch_key, "layer": layer,
        "n_top_genes": n_top_genes, "n_genes": len(train_genes), "genes_given": genes is not None,
        "hvg_flavor": "seurat_v3" if hvg_span is not None else None, "hvg_span": hvg_span,
        "categorical_covariate_keys": cat_keys, "continuous_covariate_keys": cont_keys,
        "n_latent": int(n_latent), "n_layers": int(n_layers), "n_hidden": int(n_hidden),
        "gene_likelihood": gene_likelihood, "max_epochs": max_epochs, "epochs_trained": int(epochs),
        "scanvi_max_epochs": scanvi_max_epochs, "kl_warmup_epochs": kl_warmup_epochs, "batch_size": int(batch_size), "device": resolved,
        "devices": devices, "strategy": strategy, "labels_key": labels_key,
        "unlabeled_category": unlabeled_category if method == "scanvi" else None,
        "random_state": int(random_state), "save_path": None if save_path is None else str(save_path),
        "normalized_key": normalized_key, "scvi_tools_version": scvi.__version__,
        "model_kwargs": json.dumps(model_kwargs, default=str) if model_kwargs else None,
        "train_kwargs": json.dumps(train_kwargs, default=str) if train_kwargs else None,
    })
    if save_path is not None:
        _save(model, save_path, info={
            "model_class": type(model).__name__, "genes": train_genes, "batch_key": batch_key,
            "batches": list(batch_sizes), "labels_key": labels_key,
            "labels": sorted(set(obs[labels_key].astype(str)) - {unlabeled_category}) if labels_key else [],
            "unlabeled_category": unlabeled_category, "categorical_covariate_keys": cat_keys,
            "continuous_covariate_keys": cont_keys, "key_added": key_added, "params": params})

    # Everything succeeded: only now write into the caller's object.
    adata.obsm[key_added] = latent
    if pred is not None:
        adata.obs[f"{labels_key}_scanvi"] = pd.Categorical(pred, categories=sorted(set(pred.astype(str))))
        adata.obs[f"{labels_key}_scanvi_prob"] = prob
    if norm is not None:
        adata.obsm[normalized_key] = norm
    adata.uns[key_added] = {"params": params, "genes": np.array(train_genes, dtype=object),
                            "batches": batch_sizes, "elbo_train": elbo}
    return model if return_model else None


def _save(model, save_path, *, info: dict) -> None:
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


# ----------------------------------------------------------------------------- query mapping


def map_query_scvi(
    query,
    model_path: str | os.PathLike,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    max_epochs: int | None = 200,
    batch_size: int = 128,
    device: str = "auto",
    min_gene_fraction: float = 0.5,
    train_kwargs: dict | None = None,
    return_model: bool = False,
    progress_bar: bool = False,
    key_added: str = "X_scVI",
    random_state: int = 0,
):
    """Map query cells into a saved scVI/scANVI model's latent space (scArches).

    The query counts are arranged in the model's gene order (:func:`scvi.model.SCVI.prepare_query_anndata`:
    missing model genes are zero-filled, extra genes dropped), the reference model is
    extended with the query's batches (:meth:`~scvi.model.SCVI.load_query_data`, reference
    weights frozen) and the new batch parameters are trained briefly (weight decay 0, as in
    the scvi-tools scArches tutorial).

    Parameters
    ----------
    query
        AnnData, cells x genes, raw counts in ``X`` or ``layers[layer]``. Gene identifiers must
        match the model's (``pybridge_scvi.json`` ``genes``).
    model_path
        Directory written by :func:`integrate_scvi` with ``save_path`` (R: ``model.dir``).
    batch_key
        ``obs`` column with the query's batch when it is not named as the model's ``batch_key``.
        Batch values new to the model become new batches.
    labels_key
        SCANVI models: column with known labels of query cells when not named as the model's
        ``labels_key``; absent -> all query cells unlabelled.
    max_epochs
        Query training epochs (default 200, the scvi-tools scArches tutorial value);
        ``None`` = scvi-tools' heuristic; ``0`` = no training (frozen reference encoder).
    min_gene_fraction
        At least this fraction of the model genes must be in the query, else ``ValueError``.
    device, batch_size, progress_bar, random_state, train_kwargs
        As in :func:`integrate_scvi`.
    key_added
        ``obsm`` key for the query latent space, ``uns`` key for parameters.

    Returns
    -------
    ``None`` or the query model (``return_model``). Writes ``obsm[key_added]`` (float32,
    ``n_obs x n_latent``), ``uns[key_added]`` (``params``, ``genes_missing``: number of model
    genes absent from the query), and for SCANVI models ``obs[f"{labels_key}_scanvi"]`` and
    ``obs[f"{labels_key}_scanvi_prob"]`` (predicted label of the model's ``labels_key``, probability).

    Raises
    ------
    FileNotFoundError
        ``model_path`` is not a saved pybridge model directory.
    KeyError, ValueError
        As in :func:`integrate_scvi`; too few shared genes (counts of both and an identifier hint).
    """
    import scvi

    info = read_model_info(model_path)
    cls = getattr(scvi.model, info["model_class"])
    resolve_device(device)
    q = model_anndata(query, info, layer=layer, batch_key=batch_key, labels_key=labels_key,
                      fill_missing_genes=True, min_gene_fraction=min_gene_fraction)
    _check_library(q.X, "model genes")
    n_missing = int(len(info["genes"]) - len(set(map(str, query.var_names)) & set(info["genes"])))
    tkw = _train_kwargs(device, None, None, max_epochs=max_epochs, batch_size=batch_size,
                        progress_bar=progress_bar, train_kwargs={"plan_kwargs": {"weight_decay": 0.0},
                                                                 **(train_kwargs or {})})
    with _quiet(progress_bar):
        scvi.settings.seed = int(random_state)
        cls.prepare_query_anndata(q, str(model_path), inplace=True)  # no-op here: genes already in order
        model = cls.load_query_data(q, str(model_path), **_load_device_kwargs(device))
        if max_epochs is None or int(max_epochs) > 0:
            model.train(**tkw)
        latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
        pred = prob = None
        if info["model_class"] == "SCANVI":
            soft = model.predict(soft=True)
            pred = pd.Categorical(np.asarray(soft.columns)[np.argmax(soft.to_numpy(), axis=1)].astype(str))
            prob = soft.to_numpy().max(axis=1).astype(np.float32)
    params = _clean({"model_path": str(model_path), "model_class": info["model_class"],
                     "batch_key": info["batch_key"], "query_batch_key": batch_key, "layer": layer,
                     "max_epochs": max_epochs, "batch_size": int(batch_size), "device": resolve_device(device),
                     "random_state": int(random_state), "scvi_tools_version": scvi.__version__})
    query.obsm[key_added] = latent
    if pred is not None:
        lk = info["labels_key"]
        query.obs[f"{lk}_scanvi"] = pd.Categorical(pred, categories=sorted(set(pred.astype(str))))
        query.obs[f"{lk}_scanvi_prob"] = prob
    query.uns[key_added] = {"params": params, "genes_missing": n_missing,
                            "genes": np.array(info["genes"], dtype=object)}
    return model if return_model else None
