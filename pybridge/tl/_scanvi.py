"""scANVI: the one place pybridge trains it (:func:`train_scanvi`), and label transfer with it
(:func:`annotate_scanvi`).

:func:`pybridge.tl.integrate_scvi` (``method="scanvi"``) refines its scVI model with
:func:`train_scanvi`; :func:`annotate_scanvi` trains scVI with :func:`pybridge.tl.integrate_scvi`
on reference + query and refines it with :func:`train_scanvi`, so both paths share one scVI and
one scANVI implementation.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import lightning_progress, quiet, shared_genes
from .._device import lightning_kwargs, resolve_device
from ..models._tosica_data import counts_matrix, lognorm_over
from ._label_transfer import check_threshold, reference_labels, resolve_reference, similarity_unknown, write_annotation

_UNLABELED = "_pybridge_unlabeled_"


def train_scanvi(scvi_model, *, labels_key: str, unlabeled_category: str, train_kwargs: dict,
                 max_epochs: int | None = None, n_samples_per_label: int | None = None):
    """Refine a trained scVI model into scANVI and train it (scvi-tools ``SCANVI.from_scvi_model``).

    Method: scANVI, Xu C. et al. (2021) Mol Syst Biol 17:e9620 (scvi-tools). The one place
    pybridge trains scANVI (:func:`pybridge.tl.integrate_scvi` and :func:`annotate_scanvi`).

    Parameters
    ----------
    scvi_model
        A trained :class:`scvi.model.SCVI` whose AnnData (``scvi_model.adata``) has
        ``obs[labels_key]`` (cells labelled ``unlabeled_category`` are unlabelled).
    labels_key, unlabeled_category
        Label column and the value meaning "unknown".
    train_kwargs
        Keyword arguments for ``SCANVI.train`` (device, batch size, progress bar, plan...).
    max_epochs
        scANVI epochs; ``None``: scvi-tools' heuristic.
    n_samples_per_label
        Labelled cells drawn per label and epoch (scvi-tools; ``None``: all).

    Returns
    -------
    scvi.model.SCANVI
        The trained model.
    """
    import scvi

    model = scvi.model.SCANVI.from_scvi_model(scvi_model, unlabeled_category=unlabeled_category,
                                              labels_key=labels_key)
    kw = dict(train_kwargs, max_epochs=None if max_epochs is None else int(max_epochs))
    if n_samples_per_label is not None:
        kw["n_samples_per_label"] = int(n_samples_per_label)
    model.train(**kw)
    return model


def scanvi_probabilities(model, adata=None) -> pd.DataFrame:
    """Class probabilities of a scANVI model (cells of ``adata``, default its own) as a DataFrame
    cells x labels (float64), the unlabelled category left out and rows renormalised."""
    soft = model.predict(adata, soft=True)
    unl = model.unlabeled_category_
    soft = pd.DataFrame(np.asarray(soft, dtype=np.float64), columns=list(map(str, soft.columns)))
    soft = soft[[c for c in soft.columns if c != str(unl)]]
    return soft.div(soft.sum(axis=1).replace(0, 1), axis=0)


def annotate_scanvi(
    query,
    reference,
    *,
    labels_key: str,
    layer: str | None = None,
    reference_layer: str | None = None,
    unknown_threshold: float | str = "auto",
    max_epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    model_path=None,
    device: str = "auto",
    key_added: str = "predicted_celltype",
    random_state: int = 0,
    min_shared_genes: int = 100,
    verbose: bool | None = None,
    n_top_genes: int = 2000,
    n_latent: int = 10,
    n_layers: int = 1,
    n_hidden: int = 128,
    scanvi_epochs: int | None = None,
    n_samples_per_label: int | None = 100,
):
    """Transfer cell-type labels with scANVI trained on reference + query.

    Method: scANVI, Xu C. et al. (2021) Mol Syst Biol 17:e9620 (scvi-tools). Reference and query
    are stacked (query cells unlabelled; the dataset is the scVI batch) over the ``n_top_genes``
    most variable shared genes (Seurat v3 flavour on the reference counts), an scVI model is
    trained for ``max_epochs`` (:func:`pybridge.tl.integrate_scvi`) and refined into scANVI for
    ``scanvi_epochs`` (:func:`train_scanvi`); the query's labels are scANVI's class
    probabilities. ``pybridge.tl.annotate(method="scanvi")`` calls this function.

    Parameters
    ----------
    query, reference
        AnnData with raw counts (``X`` or the layers below); the reference has
        ``obs[labels_key]`` (NA labels are left out).
    labels_key
        Reference ``obs`` column with the cell types.
    layer, reference_layer
        Layers holding counts (``None``: ``X``).
    unknown_threshold
        ``"auto"``: the calibrated rule of :func:`pybridge.tl.annotate_tosica`; a number: cells
        whose highest class probability is below it are ``"Unknown"``.
    max_epochs, scanvi_epochs
        scVI epochs (``None``: 100) and scANVI epochs (``None``: ``max(5, max_epochs // 5)``).
    batch_size, learning_rate
        Cells per step (``None``: 128) and the optimiser's step size (``None``: scvi-tools').
    model_path
        Where the trained scANVI model is saved (scvi-tools format); it is not loaded again:
        scANVI trains on reference and query together.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    key_added
        Results as :func:`pybridge.tl.annotate_tosica` (no attention).
    random_state
        Seed.
    min_shared_genes
        Error when query and reference share fewer genes.
    verbose
        Log progress and show the training bars (``None``: follow ``pybridge.settings``).
    n_top_genes, n_latent, n_layers, n_hidden
        Training genes and network size.
    n_samples_per_label
        Reference cells drawn per label and scANVI epoch (balances rare types; ``None``: all).

    Returns
    -------
    None

    Raises
    ------
    KeyError, ValueError
        As :func:`pybridge.tl.annotate_tosica`; a saved model as the reference.
    """
    import anndata as ad

    from ..pp import variable_genes
    from ._scvi import integrate_scvi

    threshold = check_threshold(unknown_threshold)
    t0 = time.perf_counter()
    if reference is not None and not hasattr(reference, "obs"):
        raise ValueError("method='scanvi' trains on reference + query together: give a reference "
                         "AnnData (saved models are supported for tosica and celltypist).")
    resolve_reference(reference, None, labels_key=labels_key, saved_exists=None, method="scanvi")
    genes = shared_genes(map(str, query.var_names), list(map(str, reference.var_names)), min_shared=min_shared_genes)
    keep, lab = reference_labels(reference, labels_key)
    xr = counts_matrix(reference, reference_layer, name="reference")
    xq = counts_matrix(query, layer, name="query")
    xr = xr[:, pd.Index(map(str, reference.var_names)).get_indexer(genes)][keep]
    xq = xq[:, pd.Index(map(str, query.var_names)).get_indexer(genes)]
    if n_top_genes is not None and len(genes) > n_top_genes:
        hv = variable_genes(xr, int(n_top_genes), flavor="seurat_v3")["highly_variable"].to_numpy()
        model_genes = [g for g, h in zip(genes, hv) if h]
    else:
        model_genes = genes
    obs = pd.DataFrame({
        "_dataset": pd.Categorical(["reference"] * xr.shape[0] + ["query"] * xq.shape[0]),
        "_labels": np.concatenate([lab, np.full(xq.shape[0], _UNLABELED)]),
    }, index=[f"r{i}" for i in range(xr.shape[0])] + [f"q{i}" for i in range(xq.shape[0])])
    joint = ad.AnnData(X=sp.vstack([xr, xq]).tocsr(), obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    epochs = 100 if max_epochs is None else int(max_epochs)
    s_epochs = int(scanvi_epochs) if scanvi_epochs is not None else max(5, epochs // 5)
    bs = 128 if batch_size is None else int(batch_size)
    plan = {"plan_kwargs": {"lr": float(learning_rate)}} if learning_rate is not None else None
    t1 = time.perf_counter()
    vae = integrate_scvi(joint, batch_key="_dataset", genes=model_genes, n_latent=n_latent, n_layers=n_layers,
                         n_hidden=n_hidden, max_epochs=epochs, batch_size=bs, device=device, train_kwargs=plan,
                         return_model=True, random_state=random_state, min_cells_per_batch=1, verbose=verbose)
    vae.adata.obs["_labels"] = pd.Categorical(joint.obs["_labels"].to_numpy())  # the model's private copy
    tkw = dict(lightning_kwargs(device), batch_size=bs, enable_progress_bar=lightning_progress(verbose),
               **(plan or {}))
    with quiet(verbose):
        model = train_scanvi(vae, labels_key="_labels", unlabeled_category=_UNLABELED, train_kwargs=tkw,
                             max_epochs=s_epochs, n_samples_per_label=n_samples_per_label)
        secs = time.perf_counter() - t1
        t2 = time.perf_counter()
        probs = scanvi_probabilities(model, model.adata[(joint.obs["_dataset"] == "query").to_numpy()])
    pred_secs = time.perf_counter() - t2
    if model_path is not None:
        model.save(str(model_path), overwrite=True, save_anndata=False)
    params = dict(method="scanvi", labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                  unknown_threshold=threshold, max_epochs=max_epochs, batch_size=batch_size,
                  learning_rate=learning_rate, device=device, random_state=int(random_state),
                  min_shared_genes=int(min_shared_genes), n_top_genes=n_top_genes, n_latent=n_latent,
                  n_layers=n_layers, n_hidden=n_hidden, scanvi_epochs=scanvi_epochs,
                  n_samples_per_label=n_samples_per_label)
    res = dict(probabilities=probs, n_shared_genes=len(genes), n_reference_genes=int(reference.n_vars),
               n_model_genes=len(model_genes), predict_seconds=pred_secs,
               model_path=None if model_path is None else str(model_path),
               train=dict(scvi_epochs=epochs, scanvi_epochs=s_epochs, batch_size=bs, seconds=secs,
                          n_genes=len(model_genes), n_reference_cells=int(xr.shape[0]),
                          n_query_cells=int(xq.shape[0]), device=resolve_device(device)))
    classes = sorted(set(lab))
    res.update(similarity_unknown(lognorm_over(reference, reference_layer, genes, name="reference")[keep],
                                  np.searchsorted(np.array(classes), lab), classes,
                                  lognorm_over(query, layer, genes, name="query"), probs, threshold))
    write_annotation(query, res, method="scanvi", params=params, key_added=key_added, t0=t0)
    return None
