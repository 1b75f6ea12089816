"""Label transfer with pybridge's TOSICA-style gene-set transformer (:func:`annotate_tosica`)."""

from __future__ import annotations

import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._core import check_epochs, logger, quiet, shared_genes
from ._label_transfer import check_threshold, is_anndata, reference_labels, resolve_reference, write_annotation

# options of pybridge.models.TOSICA(...) and of TOSICA.fit(...) accepted as keyword arguments
MODEL_OPTIONS = ("min_set_size", "max_set_size", "max_gene_sets", "rank_gene_sets", "max_overlap", "n_unannotated",
                 "n_learned_tokens", "token_dim", "n_heads", "n_layers", "dropout", "token_dropout", "input_dropout",
                 "scale", "clip", "input_scaling", "linear_C", "unknown_quantile")
FIT_OPTIONS = ("weight_decay", "class_weight", "label_smoothing", "n_top_genes")


def _saved_exists(path: Path) -> bool:
    return (path / "tosica.json").exists()


def check_saved_reference(path: Path, reference, labels_key: str) -> None:
    """A ``model_path`` that holds a model trained on another reference or other labels is an
    error that says so (it is not silently reused)."""
    from ..models._tosica_data import reference_fingerprint
    from ..models._tosica_io import read_meta

    saved = read_meta(path).get("reference") or {}
    now = reference_fingerprint(reference, labels_key)
    if not saved:
        raise ValueError(f"model_path {str(path)!r} holds a model saved without a record of its reference, so it "
                         "cannot be checked against this one: use another model_path (or delete it) to train, or "
                         "pass the saved model as the reference to reuse it.")
    diff = [f"{k} {saved.get(k)!r} (now {now[k]!r})" for k in ("labels_key", "n_cells", "classes")
            if saved.get(k) != now[k]]
    if saved.get("hash") != now["hash"] and not diff:
        diff = ["the same number of cells but other cell names or labels"]
    if diff:
        raise ValueError(f"model_path {str(path)!r} holds a model trained on another reference or other labels: "
                         + "; ".join(diff) + ". Use another model_path (or delete it) to train on this reference, "
                         "or pass the saved model as the reference to reuse it.")


def annotate_tosica(
    query,
    reference=None,
    *,
    labels_key: str | None = None,
    layer: str | None = None,
    reference_layer: str | None = None,
    gene_sets=None,
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
    **options,
):
    """Transfer cell-type labels with a TOSICA-style transformer over gene-set tokens.

    Method: TOSICA, Chen J. et al. (2023) "Transformer for one stop interpretable cell type
    annotation", Nat Commun 14:223; pybridge's implementation, :class:`pybridge.models.TOSICA`
    (differences from the published code are listed there). The model is trained on the
    reference over the genes it shares with the query, then predicts each query cell's type
    with a probability and the class token's attention over gene sets (pathways).
    ``pybridge.tl.annotate(method="tosica")`` calls this function.

    Parameters
    ----------
    query
        AnnData, raw counts in ``X`` (or ``layers[layer]``), cells x genes. Written into.
    reference
        AnnData with raw counts and ``obs[labels_key]``, or a directory saved by
        ``TOSICA.save`` / a previous call with ``model_path``.
    labels_key
        Reference ``obs`` column with the cell types (needed to train). Cells with NA labels are
        left out (the number is logged); types with fewer than 10 cells are named in a warning.
    layer, reference_layer
        Layers of query / reference holding counts (``None``: ``X``).
    gene_sets
        ``None`` (embedded human GO-BP), a GMT path or ``{name: genes}``. With no usable set,
        learned tokens are used (warning; ``uns[key_added]['fallback']`` is True).
    unknown_threshold
        ``"auto"``: a cell is ``"Unknown"`` when it does not resemble the reference cells of its
        predicted type (correlation of its standardised profile with theirs below that type's
        threshold, set on its held-out reference cells and lowered by the shift of the query's
        cells of that type; ``unknown_rule['thresholds']`` per type; see
        :class:`pybridge.models._novelty.ReferenceProfiles`); a number: when
        its highest class probability is below it.
    max_epochs, batch_size, learning_rate
        Training length (``None``: 20 epochs), cells per step (``None``: 256, smaller for small
        references) and AdamW step size (``None``: 1e-3).
    model_path
        If it holds a model trained on this reference and ``labels_key``, that model is loaded
        and not trained again (a model trained on another reference or other labels is an
        error); otherwise the trained model is saved there.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    key_added
        Results: ``obs[key_added]`` (categorical labels incl. ``"Unknown"``),
        ``obs[key_added + "_probability"]`` (float in [0, 1]),
        ``obs[key_added + "_similarity"]`` (the "Unknown" score),
        ``obsm[key_added + "_probabilities"]`` (DataFrame cells x classes),
        ``obsm[key_added + "_attention"]`` (DataFrame cells x gene sets) and ``uns[key_added]``
        (method, parameters, gene counts, the "Unknown" threshold, the input scaling applied, timings).
    random_state
        Seed.
    min_shared_genes
        Error when query and reference share fewer genes.
    verbose
        Log progress (``None``: follow ``pybridge.settings.verbosity``).
    **options
        :class:`pybridge.models.TOSICA` options (``max_gene_sets``, ``min_set_size``,
        ``max_set_size``, ``rank_gene_sets``, ``max_overlap``, ``n_unannotated``,
        ``n_learned_tokens``, ``token_dim``, ``n_heads``, ``n_layers``, ``dropout``,
        ``token_dropout``, ``input_dropout``, ``scale``, ``clip``, ``input_scaling``,
        ``linear_C``, ``unknown_quantile``) and ``TOSICA.fit`` options (``n_top_genes``,
        ``weight_decay``, ``class_weight``, ``label_smoothing``).

    Returns
    -------
    AnnData
        The attention: cells x gene-set tokens, ``X`` float32 (class-token attention, rows sum
        to <= 1); ``obs`` the predictions; ``var['n_genes']``, ``var['genes']`` (comma-joined).

    Raises
    ------
    KeyError
        ``labels_key`` or a layer missing (the message lists what exists).
    ValueError
        Too few shared genes (both counts, symbol vs Ensembl hint); data that are not counts;
        fewer than two labelled types; no reference and no saved model; a bad number.
    TypeError
        Unknown options.
    """
    bad = sorted(set(options) - set(MODEL_OPTIONS) - set(FIT_OPTIONS))
    if bad:
        raise TypeError(f"annotate_tosica got unknown option(s) {', '.join(bad)}. "
                        f"Options: {', '.join(sorted(MODEL_OPTIONS + FIT_OPTIONS))}.")
    threshold = check_threshold(unknown_threshold)
    max_epochs = check_epochs("max_epochs", max_epochs)
    t0 = time.perf_counter()
    saved = resolve_reference(reference, model_path, labels_key=labels_key, saved_exists=_saved_exists,
                              method="tosica")
    if saved is not None and is_anndata(reference):  # model_path holds a model: the same reference?
        check_saved_reference(saved, reference, labels_key)
    params = dict(method="tosica", labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                  unknown_threshold=threshold, max_epochs=max_epochs, batch_size=batch_size,
                  learning_rate=learning_rate, device=device, random_state=int(random_state),
                  min_shared_genes=int(min_shared_genes), **options)
    with quiet(verbose):
        res = _run(query, reference, saved, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                   gene_sets=gene_sets, max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
                   model_path=model_path, device=device, random_state=random_state, threshold=threshold,
                   min_shared_genes=min_shared_genes, options=options, verbose=verbose)
    info = write_annotation(query, res, method="tosica", params=params, key_added=key_added, t0=t0)
    att: pd.DataFrame = res["attention"]
    att.index = query.obs_names
    query.obsm[key_added + "_attention"] = att
    model = res["model"]
    var = pd.DataFrame(index=pd.Index(list(att.columns), name="gene_set"))
    var["n_genes"] = [len(g) for g in model.token_genes]
    var["genes"] = [",".join(g) for g in model.token_genes]
    obs = query.obs[[c for c in (key_added, key_added + "_probability", key_added + "_similarity")
                     if c in query.obs]].copy()
    out = ad.AnnData(X=att.to_numpy(dtype=np.float32), obs=obs, var=var)
    out.uns[key_added] = info
    return out


def _rule(model, threshold, pred) -> dict:
    if threshold == "auto" and model.profiles is not None and pred.similarity is not None:
        best = pred.probabilities.to_numpy().argmax(axis=1)
        return model.profiles.rule(model.profiles.query_threshold(pred.similarity.to_numpy(), best))
    return dict(rule="probability", threshold=0.5 if threshold == "auto" else float(threshold))


def _run(query, reference, saved, *, labels_key, layer, reference_layer, gene_sets, max_epochs, batch_size,
         learning_rate, model_path, device, random_state, threshold, min_shared_genes, options, verbose):
    from ..models._tosica import TOSICA

    model_opts = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
    fit_opts = {k: v for k, v in options.items() if k in FIT_OPTIONS}
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
        reference_labels(reference, labels_key)  # NA count, small types, >= 2 types: before any work
        n_shared = len(genes)
        out["n_reference_genes"] = int(reference.n_vars)
        model = TOSICA(gene_sets=gene_sets, **model_opts)
        fit_kw = dict(layer=reference_layer, genes=genes, device=device, random_state=random_state, verbose=verbose,
                      **fit_opts)
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
    pred = model.predict(query, layer=layer, unknown_threshold=threshold)
    out.update(
        probabilities=pred.probabilities, attention=pred.attention, model=model, n_shared_genes=n_shared,
        unknown=(pred.labels == "Unknown").to_numpy(), similarity=pred.similarity,
        unknown_rule=_rule(model, threshold, pred),
        input_scaling=dict(getattr(model, "scaling_used", {})),
        n_model_genes=len(model.genes), fallback=bool(model.fallback), predict_seconds=time.perf_counter() - t1,
        gene_sets=dict(source=model.gene_set_source, n_tokens=len(model.token_names),
                       n_gene_sets=0 if model.fallback else sum(not t.startswith("UNANNOTATED_")
                                                                for t in model.token_names),
                       fallback=bool(model.fallback)),
        train=model.train_info if saved is None else {},
    )
    return out
