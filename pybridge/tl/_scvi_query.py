"""scArches query mapping into a saved scVI / scANVI model (Lotfollahi et al. 2022, *Mapping
single-cell data to reference atlases by transfer learning*, Nat Biotechnol 40:121; scvi-tools'
``load_query_data``). Models come from :func:`pybridge.tl.integrate_scvi` (``save_path``).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .._core import check_epochs, check_number, clean_uns, lightning_progress, quiet
from .._device import resolve_device
from ._scvi import _load_device_kwargs, _predictions, _train_kwargs, _training, _use_data_loading, _verbose
from ._scvi_data import check_library, model_anndata, read_model_info


def map_query_scvi(
    query,
    model_path: str | os.PathLike,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    max_epochs: int | None = 200,
    batch_size: int | None = None,
    device: str = "auto",
    min_gene_fraction: float = 0.5,
    train_kwargs: dict | None = None,
    return_model: bool = False,
    verbose: bool | None = None,
    progress_bar: bool | None = None,
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
        Query training epochs, a whole number >= 0 (default 200, the scvi-tools scArches
        tutorial value); ``None`` = scvi-tools' heuristic; ``0`` = no training (the query's
        new batch parameters stay at their initial values: the frozen reference encoder).
    min_gene_fraction
        At least this fraction of the model genes must be in the query, else ``ValueError``.
    device, batch_size, verbose, progress_bar, random_state, train_kwargs
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

    max_epochs = check_epochs("max_epochs", max_epochs, allow_zero=True)
    batch_size = check_number("batch_size", batch_size, integer=True, minimum=1, allow_none=True)
    min_gene_fraction = check_number("min_gene_fraction", min_gene_fraction, minimum=0, maximum=1,
                                     exclusive_minimum=True)
    verbose = _verbose(verbose, progress_bar)
    info = read_model_info(model_path)
    cls = getattr(scvi.model, info["model_class"])
    resolve_device(device)
    q = model_anndata(query, info, layer=layer, batch_key=batch_key, labels_key=labels_key,
                      fill_missing_genes=True, min_gene_fraction=min_gene_fraction)
    check_library(q.X, "model genes")
    n_missing = int(len(info["genes"]) - len(set(map(str, query.var_names)) & set(info["genes"])))
    train_kwargs = {**(train_kwargs or {}), "plan_kwargs": {"weight_decay": 0.0,
                                                           **((train_kwargs or {}).get("plan_kwargs") or {})}}
    training = _training(device, None, None, n_obs=q.n_obs, n_vars=q.n_vars, batch_size=batch_size,
                         data_loading=None, train_kwargs=train_kwargs)
    tkw = _train_kwargs(device, None, None, max_epochs=max_epochs, training=training,
                        progress_bar=lightning_progress(verbose), train_kwargs=train_kwargs,
                        data_loading=info["model_class"] == "SCVI")
    with quiet(verbose):
        scvi.settings.seed = int(random_state)
        cls.prepare_query_anndata(q, str(model_path), inplace=True)  # no-op here: genes already in order
        model = cls.load_query_data(q, str(model_path), **_load_device_kwargs(device))
        if max_epochs is None or max_epochs > 0:
            if info["model_class"] == "SCVI":
                _use_data_loading(model, training)
            model.train(**tkw)
        else:  # documented "no training": the reference weights are trained; the query's new batch
            model.is_trained_ = True  # parameters stay at their initial values (scvi-tools would refuse)
        latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
        pred = prob = None
        if info["model_class"] == "SCANVI":
            pred, prob = _predictions(model)
    params = clean_uns({"model_path": str(model_path), "model_class": info["model_class"],
                     "batch_key": info["batch_key"], "query_batch_key": batch_key, "layer": layer,
                     "max_epochs": max_epochs, "batch_size": training.batch_size, "lr": training.lr,
                     "data_loading": training.data_loading, "device": resolve_device(device),
                     "random_state": int(random_state), "scvi_tools_version": scvi.__version__})
    query.obsm[key_added] = latent
    if pred is not None:
        lk = info["labels_key"]
        query.obs[f"{lk}_scanvi"] = pd.Categorical(pred, categories=sorted(set(pred.astype(str))))
        query.obs[f"{lk}_scanvi_prob"] = prob
    query.uns[key_added] = {"params": params, "genes_missing": n_missing,
                            "genes": np.array(info["genes"], dtype=object)}
    return model if return_model else None
