"""Cell-type annotation by label transfer: TOSICA-style transformer, scANVI or CellTypist."""

from __future__ import annotations

import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._device import lightning_kwargs, resolve_device
from .._core import check_obs_key, logger, shared_genes

METHODS = ("tosica", "scanvi", "celltypist")
_UNLABELED = "_pybridge_unlabeled_"
_TOSICA_OPTS = {"min_set_size", "max_set_size", "max_gene_sets", "rank_gene_sets", "max_overlap",
                "n_unannotated", "n_learned_tokens", "token_dim", "n_heads", "n_layers", "dropout",
                "token_dropout", "input_dropout", "scale", "clip", "weight_decay", "class_weight",
                "label_smoothing", "n_top_genes"}
_SCANVI_OPTS = {"n_top_genes", "n_latent", "n_layers", "n_hidden", "scanvi_epochs", "n_samples_per_label"}
_CELLTYPIST_OPTS = {"C", "max_iter", "feature_selection", "top_genes", "use_SGD", "n_jobs", "balance_cell_type"}


def _check_kwargs(method: str, kwargs: dict) -> None:
    allowed = {"tosica": _TOSICA_OPTS, "scanvi": _SCANVI_OPTS, "celltypist": _CELLTYPIST_OPTS}[method]
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise TypeError(f"annotate(method={method!r}) got unknown option(s) {', '.join(bad)}. "
                        f"Options for {method}: {', '.join(sorted(allowed))}.")


def _clean(d):
    """uns-safe copy: drop None, numpy scalars -> Python, nested dicts cleaned."""
    if isinstance(d, dict):
        return {str(k): _clean(v) for k, v in d.items() if v is not None}
    if isinstance(d, (list, tuple)):
        return [_clean(v) for v in d if v is not None]
    if isinstance(d, np.generic):
        return d.item()
    if isinstance(d, Path):
        return str(d)
    return d


def _saved_model_exists(method: str, path: Path) -> bool:
    if method == "tosica":
        return (path / "tosica.json").exists()
    return _celltypist_file(path).exists()


def _is_anndata(x) -> bool:
    import anndata as ad

    return isinstance(x, ad.AnnData)


def _lognorm_over(adata, layer, genes, *, name, target_sum=1e4):
    from ..models._tosica import align_genes, counts_matrix, log_normalize

    x = counts_matrix(adata, layer, name=name)
    return log_normalize(align_genes(x, list(map(str, adata.var_names)), genes), target_sum)


def _finish_labels(probs: pd.DataFrame, threshold: float):
    classes = list(map(str, probs.columns))
    p = probs.to_numpy(dtype=np.float64)
    best = p.argmax(axis=1) if p.shape[0] else np.zeros(0, int)
    prob = p.max(axis=1) if p.shape[0] else np.zeros(0)
    lab = np.array(classes, dtype=object)[best]
    lab[prob < threshold] = "Unknown"
    cats = classes + (["Unknown"] if "Unknown" not in classes else [])
    return pd.Categorical(lab, categories=cats), prob


def annotate(
    query,
    reference=None,
    *,
    labels_key: str | None = None,
    method: str = "tosica",
    layer: str | None = None,
    reference_layer: str | None = None,
    gene_sets=None,
    unknown_threshold: float = 0.5,
    max_epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    model_path=None,
    device: str = "auto",
    key_added: str = "predicted_celltype",
    random_state: int = 0,
    min_shared_genes: int = 100,
    **kwargs,
):
    """Transfer cell-type labels from a labelled reference to a query.

    Methods:

    - ``"tosica"`` (default): pybridge's TOSICA-style transformer over gene-set tokens
      (:class:`pybridge.models.TOSICA`; Chen et al. 2023, Nat Commun 14:223). Trained on the
      reference over the genes shared with the query, it predicts each query cell's type
      with a probability and the class token's attention over gene sets (pathways).
    - ``"scanvi"``: scvi-tools SCANVI (Xu et al. 2021, Mol Syst Biol 17:e9620) trained on
      reference + query (query cells unlabelled; dataset as batch), on the
      ``n_top_genes`` (2,000) most variable shared genes (Seurat v3 flavour on reference
      counts): SCVI for ``max_epochs`` then SCANVI for ``scanvi_epochs``.
    - ``"celltypist"``: a custom CellTypist model (Dominguez Conde et al. 2022, Science
      376:eabl5197) trained with ``celltypist.train`` on the reference (log1p of counts per
      10,000 over the shared genes) and applied with ``celltypist.annotate`` (best match, no
      majority voting; nothing is downloaded).

    Parameters
    ----------
    query
        AnnData, raw counts in ``X`` (or ``layers[layer]``), cells x genes. Written into.
    reference
        AnnData with raw counts and ``obs[labels_key]``; or (``tosica``) a directory saved by
        ``TOSICA.save`` / a previous ``annotate(model_path=...)``; or (``celltypist``) a
        ``.pkl`` model written by CellTypist / a directory holding ``celltypist_model.pkl``.
    labels_key
        Reference ``obs`` column with the cell types (needed to train).
    method
        ``"tosica"``, ``"scanvi"`` or ``"celltypist"``.
    layer, reference_layer
        Layers of query / reference holding counts (``None``: ``X``).
    gene_sets
        ``tosica`` only: ``None`` (embedded human GO-BP), a GMT path or ``{name: genes}``.
        With no usable set, learned tokens are used (warning; ``uns[key_added]['fallback']``).
    unknown_threshold
        Cells whose highest class probability is below this get the label ``"Unknown"``.
    max_epochs, batch_size, learning_rate
        Training length, cells per step and step size. ``None``: the method's default
        (tosica: 20 epochs, batch 256 or smaller for small references, lr 1e-3; scanvi: SCVI
        100 epochs + SCANVI 20, batch 128; celltypist: sklearn's solver defaults).
    model_path
        ``tosica``/``celltypist``: if it exists, the trained model is loaded from it and the
        reference is not trained again; otherwise the trained model is saved there.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (tosica, scanvi; CellTypist runs on CPU).
    key_added
        Results: ``obs[key_added]`` (categorical labels incl. ``"Unknown"``),
        ``obs[key_added + "_probability"]`` (float in [0, 1]),
        ``obsm[key_added + "_probabilities"]`` (DataFrame cells x classes), for tosica
        ``obsm[key_added + "_attention"]`` (DataFrame cells x gene sets), and
        ``uns[key_added]`` (method, parameters, gene counts, timings).
    random_state
        Seed.
    min_shared_genes
        Error when query and reference share fewer genes.
    **kwargs
        Method options. tosica: ``n_top_genes``, ``max_gene_sets``, ``min_set_size``,
        ``max_set_size``, ``rank_gene_sets``, ``token_dim``, ``n_heads``, ``n_layers``,
        ``dropout``, ``token_dropout``, ... (see :class:`pybridge.models.TOSICA`); scanvi:
        ``n_top_genes``, ``n_latent``, ``n_layers``, ``n_hidden``, ``scanvi_epochs``,
        ``n_samples_per_label``; celltypist: ``C``, ``max_iter``, ``feature_selection``,
        ``top_genes``, ``use_SGD``, ``n_jobs``, ``balance_cell_type``.

    Returns
    -------
    AnnData or None
        tosica: the attention as an AnnData (cells x gene-set tokens, ``X`` float32; ``obs``
        the predictions; ``var['n_genes']``, ``var['genes']``); other methods: ``None``.

    Raises
    ------
    KeyError
        ``labels_key`` missing from the reference (the message lists the columns), or a
        missing layer.
    ValueError
        Unknown method; too few shared genes (both counts, symbol vs Ensembl hint); data
        that are not counts; no reference and no saved model.
    TypeError
        Unknown method options.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    _check_kwargs(method, kwargs)
    if not 0 <= float(unknown_threshold) <= 1:
        raise ValueError(f"unknown_threshold must be in [0, 1]; got {unknown_threshold}.")
    t0 = time.perf_counter()
    saved = None
    if reference is not None and not _is_anndata(reference):
        if not isinstance(reference, (str, os.PathLike)):
            raise TypeError(f"reference must be an AnnData or a saved model path, not {type(reference).__name__}.")
        saved = Path(reference)
        if not saved.exists():
            raise FileNotFoundError(f"reference model {str(saved)!r} does not exist.")
    elif model_path is not None and method != "scanvi" and _saved_model_exists(method, Path(model_path)):
        saved = Path(model_path)
        logger.info("loading the trained model from %s (the reference is not trained again)", saved)
    if reference is None and saved is None:
        raise ValueError("give a reference AnnData (with labels_key) or a saved model (reference=path "
                         "or an existing model_path).")
    if saved is None:
        if labels_key is None:
            raise ValueError("labels_key is needed to train on the reference.")
        check_obs_key(reference, labels_key, what="labels_key")

    params = dict(method=method, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                  unknown_threshold=float(unknown_threshold), max_epochs=max_epochs, batch_size=batch_size,
                  learning_rate=learning_rate, device=device, random_state=int(random_state),
                  min_shared_genes=int(min_shared_genes), **kwargs)
    if method == "tosica":
        res = _run_tosica(query, reference, saved, labels_key=labels_key, layer=layer,
                          reference_layer=reference_layer, gene_sets=gene_sets, max_epochs=max_epochs,
                          batch_size=batch_size, learning_rate=learning_rate, model_path=model_path,
                          device=device, random_state=random_state, min_shared_genes=min_shared_genes,
                          kwargs=kwargs)
    elif method == "scanvi":
        if saved is not None:
            raise ValueError("method='scanvi' trains on reference + query together: give a reference "
                             "AnnData (saved models are supported for tosica and celltypist).")
        res = _run_scanvi(query, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                          max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
                          model_path=model_path, device=device, random_state=random_state,
                          min_shared_genes=min_shared_genes, kwargs=kwargs)
    else:
        res = _run_celltypist(query, reference, saved, labels_key=labels_key, layer=layer,
                              reference_layer=reference_layer, model_path=model_path,
                              random_state=random_state, min_shared_genes=min_shared_genes, kwargs=kwargs)

    probs: pd.DataFrame = res["probabilities"]
    probs.index = query.obs_names
    labels, prob = _finish_labels(probs, float(unknown_threshold))
    query.obs[key_added] = pd.Categorical(labels, categories=labels.categories)
    query.obs[key_added + "_probability"] = prob
    query.obsm[key_added + "_probabilities"] = probs
    secs = time.perf_counter() - t0
    info = dict(
        method=method, params=_clean(params), classes=list(map(str, probs.columns)),
        n_query_genes=int(query.n_vars), n_shared_genes=int(res["n_shared_genes"]),
        n_reference_genes=int(res.get("n_reference_genes", res["n_shared_genes"])),
        n_model_genes=int(res.get("n_model_genes", res["n_shared_genes"])),
        n_unknown=int((labels == "Unknown").sum()), seconds=float(secs),
        **{k: v for k, v in res.items() if k in ("train", "gene_sets", "model_path", "loaded_from", "fallback",
                                                "predict_seconds")},
    )
    query.uns[key_added] = _clean(info)
    logger.info("annotate(%s): %d cells labelled (%d Unknown below p=%.2f) in %.1fs", method, query.n_obs,
                info["n_unknown"], unknown_threshold, secs)

    if method != "tosica":
        return None
    import anndata as ad

    att: pd.DataFrame = res["attention"]
    att.index = query.obs_names
    query.obsm[key_added + "_attention"] = att
    model = res["model"]
    var = pd.DataFrame(index=pd.Index(list(att.columns), name="gene_set"))
    var["n_genes"] = [len(g) for g in model.token_genes]
    var["genes"] = [",".join(g) for g in model.token_genes]
    obs = pd.DataFrame({key_added: query.obs[key_added], key_added + "_probability": prob}, index=query.obs_names)
    out = ad.AnnData(X=att.to_numpy(dtype=np.float32), obs=obs, var=var)
    out.uns[key_added] = _clean(info)
    return out


# --------------------------------------------------------------------------- tosica
def _run_tosica(query, reference, saved, *, labels_key, layer, reference_layer, gene_sets, max_epochs,
                batch_size, learning_rate, model_path, device, random_state, min_shared_genes, kwargs):
    from ..models._tosica import TOSICA

    model_opts = {k: v for k, v in kwargs.items()
                  if k not in ("weight_decay", "class_weight", "label_smoothing", "n_top_genes")}
    fit_opts = {k: v for k, v in kwargs.items() if k in ("weight_decay", "class_weight", "label_smoothing",
                                                         "n_top_genes")}
    out: dict = {}
    if saved is not None:
        model = TOSICA.load(saved, device=device)
        if labels_key is not None and model.labels_key not in (None, labels_key):
            logger.warning("the saved model was trained on labels %r, not %r", model.labels_key, labels_key)
        out["loaded_from"] = str(saved)
        n_shared = len(shared_genes(map(str, query.var_names), model.genes,
                                    min_shared=min(min_shared_genes, len(model.genes)),
                                    what="query and the saved model"))
        out["n_reference_genes"] = len(model.genes)
    else:
        genes = shared_genes(map(str, query.var_names), list(map(str, reference.var_names)),
                             min_shared=min_shared_genes)
        n_shared = len(genes)
        out["n_reference_genes"] = int(reference.n_vars)
        model = TOSICA(gene_sets=gene_sets, **model_opts)
        fit_kw = dict(layer=reference_layer, genes=genes, device=device, random_state=random_state, **fit_opts)
        if max_epochs is not None:
            fit_kw["max_epochs"] = int(max_epochs)
        if batch_size is not None:
            fit_kw["batch_size"] = int(batch_size)
        if learning_rate is not None:
            fit_kw["learning_rate"] = float(learning_rate)
        model.fit(reference, labels_key, **fit_kw)
        if model_path is not None:
            model.save(model_path, overwrite=True)
            out["model_path"] = str(model_path)
    t1 = time.perf_counter()
    pred = model.predict(query, layer=layer, unknown_threshold=0.0)
    pred_secs = time.perf_counter() - t1
    out.update(
        probabilities=pred.probabilities, attention=pred.attention, model=model, n_shared_genes=n_shared,
        n_model_genes=len(model.genes), fallback=bool(model.fallback),
        gene_sets=dict(source=model.gene_set_source, n_tokens=len(model.token_names),
                       n_gene_sets=0 if model.fallback else sum(not t.startswith("UNANNOTATED_")
                                                                for t in model.token_names),
                       fallback=bool(model.fallback)),
        train=model.train_info if saved is None else {}, predict_seconds=pred_secs,
    )
    return out


# --------------------------------------------------------------------------- scanvi
def _run_scanvi(query, reference, *, labels_key, layer, reference_layer, max_epochs, batch_size, learning_rate,
                model_path, device, random_state, min_shared_genes, kwargs):
    import anndata as ad
    import scanpy as sc
    import scvi

    from ..models._tosica import counts_matrix

    genes = shared_genes(map(str, query.var_names), list(map(str, reference.var_names)),
                         min_shared=min_shared_genes)
    xr = counts_matrix(reference, reference_layer, name="reference")
    xq = counts_matrix(query, layer, name="query")
    ri = pd.Index(map(str, reference.var_names)).get_indexer(genes)
    qi = pd.Index(map(str, query.var_names)).get_indexer(genes)
    xr, xq = xr[:, ri], xq[:, qi]
    labels = reference.obs[labels_key]
    keep = ~labels.isna().to_numpy()
    xr = xr[np.flatnonzero(keep)]
    lab = labels[keep].astype(str).to_numpy()
    n_top = kwargs.get("n_top_genes", 2000)
    if n_top is not None and len(genes) > n_top:
        tmp = ad.AnnData(X=xr.copy(), var=pd.DataFrame(index=pd.Index(genes)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.highly_variable_genes(tmp, flavor="seurat_v3", n_top_genes=int(n_top))
        hv = np.flatnonzero(tmp.var["highly_variable"].to_numpy())
        xr, xq = xr[:, hv], xq[:, hv]
        model_genes = [genes[i] for i in hv]
    else:
        model_genes = genes
    obs = pd.DataFrame({
        "_batch": pd.Categorical(["reference"] * xr.shape[0] + ["query"] * xq.shape[0]),
        "_labels": np.concatenate([lab, np.full(xq.shape[0], _UNLABELED)]),
    }, index=[f"r{i}" for i in range(xr.shape[0])] + [f"q{i}" for i in range(xq.shape[0])])
    joint = ad.AnnData(X=sp.vstack([xr, xq]).tocsr(), obs=obs, var=pd.DataFrame(index=pd.Index(model_genes)))
    scvi.settings.seed = int(random_state)
    lk = lightning_kwargs(device)
    epochs = 100 if max_epochs is None else int(max_epochs)
    s_epochs = int(kwargs.get("scanvi_epochs", max(5, epochs // 5)))
    bs = 128 if batch_size is None else int(batch_size)
    plan = {"lr": float(learning_rate)} if learning_rate is not None else None
    quiet = dict(enable_progress_bar=False, enable_model_summary=False, logger=False)
    t0 = time.perf_counter()
    lvl = logging.getLogger("scvi").level
    logging.getLogger("scvi").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scvi.model.SCVI.setup_anndata(joint, batch_key="_batch", labels_key="_labels")
            vae = scvi.model.SCVI(joint, n_latent=int(kwargs.get("n_latent", 10)),
                                  n_layers=int(kwargs.get("n_layers", 1)), n_hidden=int(kwargs.get("n_hidden", 128)))
            vae.train(max_epochs=epochs, batch_size=bs, plan_kwargs=plan, **lk, **quiet)
            lvae = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=_UNLABELED)
            lvae.train(max_epochs=s_epochs, batch_size=bs, n_samples_per_label=kwargs.get("n_samples_per_label", 100),
                       plan_kwargs=plan, **lk, **quiet)
            secs = time.perf_counter() - t0
            t1 = time.perf_counter()
            probs = lvae.predict(joint[joint.obs["_batch"] == "query"], soft=True)
            pred_secs = time.perf_counter() - t1
    finally:
        logging.getLogger("scvi").setLevel(lvl)
    probs = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(map(str, probs.columns)))
    probs = probs[[c for c in probs.columns if c != _UNLABELED]]
    probs = probs.div(probs.sum(axis=1).replace(0, 1), axis=0)
    if model_path is not None:
        lvae.save(str(model_path), overwrite=True, save_anndata=False)
    n_ref = int(xr.shape[0])
    return dict(probabilities=probs, n_shared_genes=len(genes), n_reference_genes=int(reference.n_vars),
                predict_seconds=pred_secs,
                n_model_genes=len(model_genes), model_path=None if model_path is None else str(model_path),
                train=dict(scvi_epochs=epochs, scanvi_epochs=s_epochs, batch_size=bs, seconds=secs,
                           n_genes=len(model_genes),
                           n_reference_cells=n_ref, n_query_cells=int(xq.shape[0]),
                           device=resolve_device(device)))


# --------------------------------------------------------------------------- celltypist
def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


def _celltypist_lbfgs_ok() -> bool:
    """Does this scikit-learn accept LogisticRegression(multi_class=...) (CellTypist's default path)?"""
    import inspect

    from sklearn.linear_model import LogisticRegression

    return "multi_class" in inspect.signature(LogisticRegression.__init__).parameters


@contextmanager
def _celltypist_sklearn_compat():
    """CellTypist 1.7's logistic regression passes ``multi_class='ovr'``, which scikit-learn
    >= 1.8 removed. While this context is open (and only on such a scikit-learn), CellTypist's
    internal ``_LRClassifier`` is replaced by the same one-vs-rest model built the current way
    (``OneVsRestClassifier(LogisticRegression(...))``, with ``coef_``/``intercept_`` stacked as
    CellTypist expects); the rest of ``celltypist.train`` (scaling, clipping, features) runs
    unchanged. Yields whether the replacement was made."""
    if _celltypist_lbfgs_ok():
        yield False
        return
    import importlib

    ctt = importlib.import_module("celltypist.train")  # the module (celltypist.train is the function)
    original = ctt._LRClassifier

    def _ovr(indata, labels, C, solver, max_iter, n_jobs, **kw):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        solver = solver or ("sag" if len(labels) > 50000 else "lbfgs")
        clf = OneVsRestClassifier(LogisticRegression(C=C, solver=solver, max_iter=max_iter, **kw), n_jobs=n_jobs)
        clf.fit(indata, labels)
        clf.coef_ = np.vstack([e.coef_ for e in clf.estimators_])
        clf.intercept_ = np.concatenate([e.intercept_ for e in clf.estimators_])
        return clf

    ctt._LRClassifier = _ovr
    try:
        yield True
    finally:
        ctt._LRClassifier = original


def _celltypist_file(path: Path) -> Path:
    """A ``.pkl`` path is the model file; anything else is a directory holding ``celltypist_model.pkl``."""
    path = Path(path)
    if path.suffix == ".pkl" and not path.is_dir():
        return path
    return path / "celltypist_model.pkl"


def _run_celltypist(query, reference, saved, *, labels_key, layer, reference_layer, model_path, random_state,
                    min_shared_genes, kwargs):
    import anndata as ad
    import celltypist

    out: dict = {}
    np.random.seed(int(random_state))  # CellTypist/sklearn draw from numpy's global generator
    ct_log = logging.getLogger("celltypist")
    lvl = ct_log.level
    ct_log.setLevel(logging.WARNING)
    try:
        if saved is not None:
            f = _celltypist_file(saved)
            if not f.exists():
                raise FileNotFoundError(f"{saved} holds no CellTypist model (expected {f.name}).")
            model = celltypist.models.Model.load(str(f))
            genes_model = list(map(str, model.features))
            n_shared = len(shared_genes(map(str, query.var_names), genes_model,
                                        min_shared=min(min_shared_genes, len(genes_model)),
                                        what="query and the saved model"))
            genes = genes_model
            out["loaded_from"] = str(f)
            out["n_reference_genes"] = len(genes_model)
            t = {}
        else:
            genes = shared_genes(map(str, query.var_names), list(map(str, reference.var_names)),
                                 min_shared=min_shared_genes)
            n_shared = len(genes)
            labels = reference.obs[labels_key]
            keep = np.flatnonzero(~labels.isna().to_numpy())
            xr = _lognorm_over(reference, reference_layer, genes, name="reference")[keep]
            t0 = time.perf_counter()
            opts = dict(kwargs)
            opts.setdefault("n_jobs", 1)
            with warnings.catch_warnings(), _celltypist_sklearn_compat() as patched:
                warnings.simplefilter("ignore")
                model = celltypist.train(xr, labels=labels.iloc[keep].astype(str).to_numpy(), genes=genes,
                                         check_expression=False, **opts)
            if patched and not opts.get("use_SGD") and not opts.get("feature_selection"):
                opts["classifier"] = "one-vs-rest LogisticRegression (scikit-learn >= 1.8 compatibility)"
            t = dict(seconds=time.perf_counter() - t0, n_cells=int(len(keep)), **opts)
            out["n_reference_genes"] = int(reference.n_vars)
            if model_path is not None:
                f = _celltypist_file(Path(model_path))
                f.parent.mkdir(parents=True, exist_ok=True)
                model.write(str(f))
                out["model_path"] = str(f)
        xq = _lognorm_over(query, layer, genes, name="query")
        qa = ad.AnnData(X=xq, var=pd.DataFrame(index=pd.Index(genes)),
                        obs=pd.DataFrame(index=pd.Index([f"c{i}" for i in range(xq.shape[0])])))
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = celltypist.annotate(qa, model=model, majority_voting=False)
        out["predict_seconds"] = time.perf_counter() - t1
    finally:
        ct_log.setLevel(lvl)
    probs = res.probability_matrix.copy()
    probs = pd.DataFrame(probs.to_numpy(dtype=np.float64), columns=list(map(str, probs.columns)))
    out.update(probabilities=probs, n_shared_genes=n_shared, n_model_genes=len(genes), train=t)
    return out
