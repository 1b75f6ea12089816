"""scVI / scANVI integration and scArches query mapping (scvi-tools).

Methods
-------
- scVI: Lopez et al. 2018, *Deep generative modeling for single-cell transcriptomics*,
  Nat Methods 15:1053. scvi-tools: Gayoso et al. 2022, Nat Biotechnol 40:163.
- scANVI: Xu et al. 2021, *Probabilistic harmonization and annotation of single-cell
  transcriptomics data with deep generative models*, Mol Syst Biol 17:e9620.
- scArches query mapping (:mod:`pybridge.tl._scvi_query`): Lotfollahi et al. 2022, *Mapping
  single-cell data to reference atlases by transfer learning*, Nat Biotechnol 40:121.
- Batch-aware highly variable genes: Stuart et al. 2019 (Seurat v3 variance-stabilising
  flavour), as implemented by :func:`pybridge.pp.variable_genes` (``flavor="seurat_v3"``, scanpy's rule).

The model's input and the saved-model directory (``save_path``: ``model.pt`` +
``pybridge_scvi.json``) are defined in :mod:`pybridge.tl._scvi_data`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._core import (check_counts, check_epochs, check_number, check_obs_key, clean_uns, get_matrix,
                     is_verbose, lightning_progress, logger, quiet)
from .._device import ScviTraining, lightning_kwargs, resolve_device, scvi_training
from ._scanvi import train_scanvi
from ._scvi_data import (MODEL_INFO_FILE, categorical, check_batches, counts_source,
                         model_anndata, read_model_info, save_model, select_genes, training_anndata)

__all__ = ["integrate_scvi", "MODEL_INFO_FILE", "model_anndata", "read_model_info"]

_METHODS = ("scvi", "scanvi")
_LIKELIHOODS = ("nb", "zinb", "poisson")


def _train_kwargs(device: str, devices, strategy, *, max_epochs, training: ScviTraining | None, progress_bar: bool,
                  train_kwargs: dict | None, data_loading: bool = True) -> dict:
    """Keyword arguments for ``model.train()``: device via pybridge._device, DDP passthrough, the
    device rule's batch size / learning rate / data loading (:func:`pybridge._device.scvi_training`;
    ``data_loading=False``: without its data-loading arguments), the caller's ``train_kwargs`` last."""
    kw = dict(lightning_kwargs(device))
    if devices is not None:
        kw["devices"] = devices
    if strategy is not None:
        kw["strategy"] = strategy
    kw.update(max_epochs=None if max_epochs is None else int(max_epochs), enable_progress_bar=bool(progress_bar))
    if training is not None:
        tk = training.train_kwargs()
        kw["batch_size"] = tk.pop("batch_size")
        if data_loading:
            kw.update(tk)
        if training.plan_kwargs():
            kw["plan_kwargs"] = training.plan_kwargs()
    for k, v in (train_kwargs or {}).items():  # the caller's values win; dicts are merged
        kw[k] = {**kw[k], **v} if isinstance(v, dict) and isinstance(kw.get(k), dict) else v
    return kw


def _training(device, devices, strategy, *, n_obs, n_vars, batch_size, data_loading, train_kwargs) -> ScviTraining:
    """:func:`pybridge._device.scvi_training` for this call (several devices: scvi-tools' loader)."""
    user_lr = ((train_kwargs or {}).get("plan_kwargs") or {}).get("lr")
    if data_loading is None and (strategy is not None or devices not in (None, 1)):
        data_loading = "anndata"  # distributed samplers need scvi-tools' own loader
    return scvi_training(device, n_obs=n_obs, n_vars=n_vars, batch_size=batch_size, lr=user_lr,
                         data_loading=data_loading)


def _use_data_loading(model, training: ScviTraining) -> None:
    """``"device"`` loading: scvi-tools' DeviceBackedDataSplitter for this model's ``train()``."""
    if training.data_loading == "device":
        from scvi.dataloaders import DeviceBackedDataSplitter

        model._data_splitter_cls = DeviceBackedDataSplitter


def _load_device_kwargs(device: str) -> dict:
    """``accelerator``/``device`` for scvi-tools ``load`` / ``load_query_data`` (one device)."""
    kw = lightning_kwargs(device)
    dev = kw["devices"]
    return {"accelerator": kw["accelerator"], "device": dev[0] if isinstance(dev, list) else "auto"}


def _verbose(verbose, progress_bar) -> bool:
    """``progress_bar`` (older spelling, still accepted) wins when given; else ``verbose``."""
    return bool(progress_bar) if progress_bar is not None else is_verbose(verbose)


def _predictions(model):
    """scANVI's predicted label (categorical) and its probability (float32) per cell."""
    soft = model.predict(soft=True)
    pred = pd.Categorical(np.asarray(soft.columns)[np.argmax(soft.to_numpy(), axis=1)].astype(str))
    return pred, soft.to_numpy().max(axis=1).astype(np.float32)


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
    batch_size: int | None = None,
    data_loading: str | None = None,
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
    verbose: bool | None = None,
    progress_bar: bool | None = None,
    key_added: str = "X_scVI",
    random_state: int = 0,
):
    """Integrate batches with scVI (or scANVI) on raw counts; latent space in ``obsm[key_added]``.

    Batch-aware highly variable genes are chosen on the counts (:func:`pybridge.pp.variable_genes`,
    ``flavor="seurat_v3"`` per batch), an scvi-tools :class:`~scvi.model.SCVI` model is trained on a copy
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
        Training epochs, a whole number >= 1; ``None`` = scvi-tools' heuristic
        ``min(400, round(400 * 20000 / n_obs))``.
    scanvi_max_epochs
        scANVI epochs (>= 1) after scVI pre-training; ``None`` = scvi-tools' heuristic (2-10).
    kl_warmup_epochs
        Epochs over which the KL weight rises from 0 to 1 (scvi-tools ``n_epochs_kl_warmup``);
        ``None`` = scvi-tools' default (400). With short training (``max_epochs`` well below
        400) a shorter warm-up (e.g. ``max_epochs // 5``) gives a regularised, better-mixed
        latent space.
    batch_size
        Minibatch size (cells); ``None``: the device rule of :func:`pybridge._device.scvi_training`
        (CPU: 128, scvi-tools' default; CUDA: up to 1024 with the learning rate scaled by
        ``sqrt(batch_size / 128)``, keeping >= 32 minibatches per epoch). The chosen values are
        in ``uns[key_added]["params"]`` (``batch_size``, ``lr``, ``data_loading``, ``training_rule``).
    data_loading
        ``"anndata"`` (scvi-tools' loader), ``"device"`` (a dense copy of the training matrix on
        the device, minibatches drawn there) or ``"sparse"`` (sparse minibatches from pinned
        memory); ``None``: the device rule (CPU: ``"anndata"``; CUDA: ``"device"`` when the copy
        fits in a quarter of the free GPU memory, else ``"sparse"``).
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
    verbose
        Show the training progress bar (epoch, ELBO, time left) and scvi-tools' messages;
        ``None`` follows ``pybridge.settings.verbosity`` (shown at the default, ``"info"``).
        ``False`` silences Lightning's seed/GPU/TPU lines too.
    progress_bar
        Older spelling of ``verbose`` (wins when given).
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
        unknown ``method`` / ``gene_likelihood``; ``max_epochs`` (or another number) out of range.
    TypeError
        A number argument that is not a number.
    RuntimeError
        ``device="cuda"`` without a visible GPU.
    """
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
    # numbers first, before any work (R sends whole numbers as doubles: 3.0 is accepted as 3)
    max_epochs = check_epochs("max_epochs", max_epochs)
    scanvi_max_epochs = check_epochs("scanvi_max_epochs", scanvi_max_epochs)
    kl_warmup_epochs = check_epochs("kl_warmup_epochs", kl_warmup_epochs, allow_zero=True)
    batch_size = check_number("batch_size", batch_size, integer=True, minimum=1, allow_none=True)
    n_latent, n_layers, n_hidden = (check_number(k, v, integer=True, minimum=1) for k, v in
                                    (("n_latent", n_latent), ("n_layers", n_layers), ("n_hidden", n_hidden)))
    min_cells_per_batch = check_number("min_cells_per_batch", min_cells_per_batch, integer=True, minimum=1)
    verbose = _verbose(verbose, progress_bar)
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
    name, hint = counts_source(adata, layer)
    check_counts(X, name=name, hint=hint)
    batch = categorical(adata.obs[batch_key], batch_key, "batch")
    batch_sizes = check_batches(batch, batch_key, min_cells_per_batch)
    var_names = pd.Index(adata.var_names.astype(str))
    train_genes, hvg_span = select_genes(X, var_names, batch, n_top_genes=n_top_genes, genes=genes,
                                         batch_key=batch_key)
    mdata = training_anndata(adata, X, train_genes, var_names, batch=batch, batch_key=batch_key,
                             cat_keys=cat_keys, cont_keys=cont_keys, labels_key=labels_key,
                             unlabeled_category=unlabeled_category)

    if kl_warmup_epochs is not None:
        train_kwargs = dict(train_kwargs or {})
        train_kwargs["plan_kwargs"] = {**train_kwargs.get("plan_kwargs", {}), "n_epochs_kl_warmup": kl_warmup_epochs}
    training = _training(device, devices, strategy, n_obs=mdata.n_obs, n_vars=mdata.n_vars, batch_size=batch_size,
                         data_loading=data_loading, train_kwargs=train_kwargs)
    tkw = _train_kwargs(device, devices, strategy, max_epochs=max_epochs, training=training,
                        progress_bar=lightning_progress(verbose), train_kwargs=train_kwargs)
    with quiet(verbose):
        scvi.settings.seed = int(random_state)
        scvi.model.SCVI.setup_anndata(mdata, batch_key=batch_key, categorical_covariate_keys=cat_keys or None,
                                      continuous_covariate_keys=cont_keys or None)
        model = scvi.model.SCVI(mdata, n_latent=n_latent, n_layers=n_layers, n_hidden=n_hidden,
                                gene_likelihood=gene_likelihood, **(model_kwargs or {}))
        logger.info("training scVI on %d cells x %d genes (%d batches) on %s; %s", mdata.n_obs, mdata.n_vars,
                    len(batch_sizes), resolved, training.rule)
        _use_data_loading(model, training)
        model.train(**tkw)
        epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else tkw["max_epochs"]
        elbo = np.asarray(model.history["elbo_train"]).ravel().astype(np.float64) \
            if "elbo_train" in model.history else np.array([])
        pred = prob = None
        if method == "scanvi":
            # the rule's batch size and learning rate, not its data loading (scANVI's own splitter)
            skw = _train_kwargs(device, devices, strategy, max_epochs=scanvi_max_epochs, training=training,
                                progress_bar=lightning_progress(verbose), train_kwargs=train_kwargs, data_loading=False)
            logger.info("training scANVI with labels %r", labels_key)
            model = train_scanvi(model, labels_key=labels_key, unlabeled_category=unlabeled_category,
                                 train_kwargs=skw, max_epochs=scanvi_max_epochs)
            pred, prob = _predictions(model)
        latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
        norm = None
        if normalized_key is not None:
            norm = model.get_normalized_expression(library_size=1e4, return_numpy=True)
            norm = pd.DataFrame(np.asarray(norm, dtype=np.float32), index=adata.obs_names,
                                columns=pd.Index(train_genes, dtype=object))

    params = clean_uns({
        "method": method, "model_class": type(model).__name__, "batch_key": batch_key, "layer": layer,
        "n_top_genes": n_top_genes, "n_genes": len(train_genes), "genes_given": genes is not None,
        "hvg_flavor": "seurat_v3" if hvg_span is not None else None, "hvg_span": hvg_span,
        "categorical_covariate_keys": cat_keys or None, "continuous_covariate_keys": cont_keys or None,
        "n_latent": n_latent, "n_layers": n_layers, "n_hidden": n_hidden,
        "gene_likelihood": gene_likelihood, "max_epochs": max_epochs, "epochs_trained": int(epochs),
        "scanvi_max_epochs": scanvi_max_epochs, "kl_warmup_epochs": kl_warmup_epochs, "batch_size": training.batch_size,
        "lr": training.lr, "data_loading": training.data_loading, "training_rule": training.rule,
        "device": resolved, "devices": devices, "strategy": strategy, "labels_key": labels_key,
        "unlabeled_category": unlabeled_category if method == "scanvi" else None,
        "random_state": int(random_state), "save_path": None if save_path is None else str(save_path),
        "normalized_key": normalized_key, "scvi_tools_version": scvi.__version__,
        "model_kwargs": json.dumps(model_kwargs, default=str) if model_kwargs else None,
        "train_kwargs": json.dumps(train_kwargs, default=str) if train_kwargs else None,
    })
    if save_path is not None:
        save_model(model, save_path, info={
            "model_class": type(model).__name__, "genes": train_genes, "batch_key": batch_key,
            "batches": list(batch_sizes), "labels_key": labels_key,
            "labels": sorted(set(mdata.obs[labels_key].astype(str)) - {unlabeled_category}) if labels_key else [],
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
