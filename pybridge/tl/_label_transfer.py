"""What every annotation method shares: the reference's labels, the saved-model rules, and
writing the predictions into the query (labels, "Unknown", probabilities, ``uns`` summary).

The methods (:mod:`._tosica`, :mod:`._celltypist`, :mod:`._scanvi`) compute class
probabilities; :func:`write_annotation` turns them into the same outputs for all of them, so
``annotate(method=...)`` and the per-method functions give identical results.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .._core import check_number, check_obs_key, clean_uns, logger

UNKNOWN = "Unknown"
MIN_CELLS_PER_TYPE = 10


def is_anndata(x) -> bool:
    import anndata as ad

    return isinstance(x, ad.AnnData)


def check_threshold(unknown_threshold) -> float | str:
    """``"auto"`` (the calibrated rule), or a probability threshold as a float in [0, 1]."""
    if isinstance(unknown_threshold, str):
        if unknown_threshold != "auto":
            raise ValueError(f"unknown_threshold must be 'auto' or a number in [0, 1], got {unknown_threshold!r}.")
        return "auto"
    return float(check_number("unknown_threshold", unknown_threshold, minimum=0, maximum=1))


def similarity_unknown(ref_x, ref_y: np.ndarray, classes: list[str], query_x, probs: pd.DataFrame,
                       threshold, quantile: float = 0.05) -> dict:
    """The ``unknown`` / ``similarity`` / ``unknown_rule`` entries of a method's result.

    ``"auto"``: the calibrated rule of :class:`pybridge.models._novelty.ReferenceProfiles`
    (reference ``ref_x`` log-normalised over the genes of ``query_x``, ``ref_y`` class indices
    into ``classes``); a number: the probability rule.
    """
    from ..models._novelty import ReferenceProfiles

    p = probs.to_numpy(dtype=np.float64)
    if threshold != "auto" or ref_x is None:
        t = 0.5 if threshold == "auto" else float(threshold)
        return dict(unknown=p.max(axis=1) < t if p.shape[0] else np.zeros(0, bool),
                    unknown_rule=dict(rule="probability", threshold=t))
    prof = ReferenceProfiles(quantile).fit(ref_x, ref_y, classes)
    order = [classes.index(c) for c in map(str, probs.columns)]
    predicted = np.asarray(order)[p.argmax(axis=1)] if p.shape[0] else np.zeros(0, int)
    unknown, sim, applied = prof.is_unknown(query_x, predicted)
    return dict(unknown=unknown, similarity=sim, unknown_rule=prof.rule(applied))


def resolve_reference(reference, model_path, *, labels_key, saved_exists, method: str):
    """Where the model comes from: ``(saved_path or None)``.

    ``reference`` may be an AnnData (train), or a path to a saved model; when ``reference`` is
    an AnnData and ``model_path`` already holds a model, that model is loaded (the reference is
    not trained again). Raises clear errors for a missing reference / model / labels column.
    """
    saved = None
    if reference is not None and not is_anndata(reference):
        if not isinstance(reference, (str, os.PathLike)):
            raise TypeError(f"reference must be an AnnData or a saved model path, not {type(reference).__name__}.")
        saved = Path(reference)
        if not saved.exists():
            raise FileNotFoundError(f"reference model {str(saved)!r} does not exist.")
    elif model_path is not None and saved_exists is not None and saved_exists(Path(model_path)):
        saved = Path(model_path)
        logger.info("loading the trained model from %s (the reference is not trained again)", saved)
    if reference is None and saved is None:
        hint = "" if saved_exists is not None else f" (method={method!r} cannot load a saved model)"
        raise ValueError("give a reference AnnData (with labels_key) or a saved model (reference=path "
                         f"or an existing model_path){hint}.")
    if saved is None:
        if labels_key is None:
            raise ValueError("labels_key is needed to train on the reference.")
        check_obs_key(reference, labels_key, what="labels_key")
    return saved


def reference_labels(reference, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference cells with a label and their labels (str).

    Cells whose label is missing (NA) are left out, with a note giving their number. Types with
    fewer than ``MIN_CELLS_PER_TYPE`` cells are named in a warning (they are still trained on).

    Returns
    -------
    keep
        Integer indices of the labelled reference cells.
    labels
        Their labels as a str array.

    Raises
    ------
    ValueError
        When fewer than two cell types are labelled: a classifier needs at least two.
    """
    lab = reference.obs[labels_key]
    ok = ~lab.isna().to_numpy()
    if not ok.all():
        logger.info("leaving out %d of %d reference cells with no %s (NA)", int((~ok).sum()), len(ok), labels_key)
    keep = np.flatnonzero(ok)
    labels = lab.iloc[keep].astype(str).to_numpy()
    counts = pd.Series(labels).value_counts()
    if len(counts) < 2:
        found = f"only {counts.index[0]!r}" if len(counts) else "none"
        raise ValueError(
            f"the reference has {len(counts)} cell type in labels_key {labels_key!r} ({found}); label "
            "transfer needs at least two types to tell apart. Use a reference with several labelled types.")
    small = counts[counts < MIN_CELLS_PER_TYPE]
    if len(small):
        msg = (f"reference cell types with fewer than {MIN_CELLS_PER_TYPE} cells: "
               + ", ".join(f"{k} ({v})" for k, v in small.items())
               + "; they are trained on, but their predictions are unreliable.")
        warnings.warn(msg, UserWarning, stacklevel=3)
    return keep, labels


def finish_labels(probs: pd.DataFrame, unknown: np.ndarray):
    """Argmax class per cell, ``"Unknown"`` where ``unknown``."""
    classes = list(map(str, probs.columns))
    p = probs.to_numpy(dtype=np.float64)
    best = p.argmax(axis=1) if p.shape[0] else np.zeros(0, int)
    prob = p.max(axis=1) if p.shape[0] else np.zeros(0)
    lab = np.array(classes, dtype=object)[best]
    lab[np.asarray(unknown, dtype=bool)] = UNKNOWN
    cats = classes + ([UNKNOWN] if UNKNOWN not in classes else [])
    return pd.Categorical(lab, categories=cats), prob


def write_annotation(query, res: dict, *, method: str, params: dict, key_added: str, t0: float) -> dict:
    """Write a method's result into ``query``; returns the ``uns`` summary.

    ``res`` holds ``probabilities`` (DataFrame cells x classes, in query order), ``unknown``
    (bool per cell), ``unknown_rule`` (dict), optionally ``similarity`` (per cell), and the
    method's figures (``n_shared_genes``, ``n_reference_genes``, ``n_model_genes``, ``train``,
    ``predict_seconds``, ``gene_sets``, ``model_path``, ``loaded_from``, ``fallback``).
    Writes ``obs[key_added]``, ``obs[key_added + "_probability"]``,
    ``obs[key_added + "_similarity"]`` (when computed), ``obsm[key_added + "_probabilities"]``
    and ``uns[key_added]``.
    """
    probs: pd.DataFrame = res["probabilities"]
    probs.index = query.obs_names
    labels, prob = finish_labels(probs, res["unknown"])
    query.obs[key_added] = pd.Categorical(labels, categories=labels.categories)
    query.obs[key_added + "_probability"] = prob
    if res.get("similarity") is not None:
        query.obs[key_added + "_similarity"] = np.asarray(res["similarity"], dtype=np.float64)
    query.obsm[key_added + "_probabilities"] = probs
    secs = time.perf_counter() - t0
    info = dict(
        method=method, params=clean_uns(params), classes=list(map(str, probs.columns)),
        n_query_genes=int(query.n_vars), n_shared_genes=int(res["n_shared_genes"]),
        n_reference_genes=int(res.get("n_reference_genes", res["n_shared_genes"])),
        n_model_genes=int(res.get("n_model_genes", res["n_shared_genes"])),
        n_unknown=int((labels == UNKNOWN).sum()), unknown_rule=res["unknown_rule"],
        unknown_threshold=float(res["unknown_rule"]["threshold"]), seconds=float(secs),
        **{k: v for k, v in res.items() if k in ("train", "gene_sets", "model_path", "loaded_from", "fallback",
                                                "predict_seconds", "input_scaling")},
    )
    info = clean_uns(info)
    query.uns[key_added] = info
    logger.info("annotate(%s): %d cells labelled (%d Unknown: %s below %.3f) in %.1fs", method, query.n_obs,
                info["n_unknown"], res["unknown_rule"]["rule"], info["unknown_threshold"], secs)
    return info
