"""Label transfer with a custom CellTypist model (:func:`annotate_celltypist`)."""

from __future__ import annotations

import json
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import quiet, shared_genes
from ..models._tosica_data import lognorm_over, reference_fingerprint
from ._label_transfer import (check_threshold, is_anndata, reference_labels, resolve_reference, similarity_unknown,
                              write_annotation)


def _profiles_file(f: Path) -> Path:
    """Beside a CellTypist model: the reference's profiles (calibrated "Unknown") and fingerprint."""
    return f.with_name(f.stem + ".pybridge.npz")


def _save_profiles(f: Path, xr, y, classes, genes, fingerprint: dict) -> None:
    from ..io._atomic import atomic_path

    with atomic_path(_profiles_file(f), overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, x=xr.toarray().astype(np.float32), y=y, classes=np.array(classes, dtype=str),
                                genes=np.array(genes, dtype=str), fingerprint=json.dumps(fingerprint))


def _load_profiles(f: Path):
    p = _profiles_file(f)
    if not p.exists():
        return None
    with np.load(p, allow_pickle=False) as d:
        return (sp.csr_matrix(d["x"]), d["y"], list(map(str, d["classes"])),
                json.loads(str(d["fingerprint"])), list(map(str, d["genes"])))


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


def celltypist_file(path: Path) -> Path:
    """A ``.pkl`` path is the model file; anything else is a directory holding ``celltypist_model.pkl``."""
    path = Path(path)
    if path.suffix == ".pkl" and not path.is_dir():
        return path
    return path / "celltypist_model.pkl"


def annotate_celltypist(
    query,
    reference=None,
    *,
    labels_key: str | None = None,
    layer: str | None = None,
    reference_layer: str | None = None,
    unknown_threshold: float | str = "auto",
    model_path=None,
    key_added: str = "predicted_celltype",
    random_state: int = 0,
    min_shared_genes: int = 100,
    verbose: bool | None = None,
    C: float = 1.0,
    max_iter: int | None = None,
    feature_selection: bool = False,
    top_genes: int = 300,
    use_SGD: bool = False,
    n_jobs: int = 1,
    balance_cell_type: bool = False,
):
    """Transfer cell-type labels with a custom CellTypist model trained on the reference.

    Method: CellTypist, Dominguez Conde C. et al. (2022) Science 376:eabl5197. A model is
    trained with ``celltypist.train`` on the reference (log1p of counts per 10,000 over the
    genes shared with the query) and applied with ``celltypist.annotate`` (best match, no
    majority voting; nothing is downloaded). ``pybridge.tl.annotate(method="celltypist")``
    calls this function. CellTypist's own output key is ``predicted_labels``; here the labels
    are ``obs[key_added]``.

    Parameters
    ----------
    query
        AnnData, raw counts in ``X`` (or ``layers[layer]``), cells x genes. Written into.
    reference
        AnnData with raw counts and ``obs[labels_key]``, or a ``.pkl`` model written by
        CellTypist / a directory holding ``celltypist_model.pkl``.
    labels_key
        Reference ``obs`` column with the cell types (NA labels are left out).
    layer, reference_layer
        Layers of query / reference holding counts (``None``: ``X``).
    unknown_threshold
        ``"auto"``: the calibrated rule of :func:`pybridge.tl.annotate_tosica` (from the
        reference's profiles, saved beside the model as ``<model>.pybridge.npz``; a CellTypist
        model without them falls back to probability 0.5); a number: cells whose highest
        class probability is below it are ``"Unknown"``.
    model_path
        If it holds a model trained on this reference and ``labels_key``, that model is
        loaded (one trained on another reference is an error); otherwise the trained model is
        written there (``celltypist_model.pkl`` in the directory, or the ``.pkl`` path itself).
    key_added
        Results as :func:`pybridge.tl.annotate_tosica` (labels, probability, probabilities,
        ``uns`` summary; no attention).
    random_state
        Seed (NumPy's global generator, which CellTypist and scikit-learn draw from).
    min_shared_genes
        Error when query and reference share fewer genes.
    verbose
        Log progress (``None``: follow ``pybridge.settings.verbosity``).
    C, max_iter, feature_selection, top_genes, use_SGD, n_jobs, balance_cell_type
        ``celltypist.train`` options (``max_iter=None``: CellTypist's default).

    Returns
    -------
    None

    Raises
    ------
    KeyError, ValueError, FileNotFoundError
        As :func:`pybridge.tl.annotate_tosica`; a path that holds no CellTypist model.
    """
    import anndata as ad

    with warnings.catch_warnings():  # celltypist's import sets process-wide "ignore UserWarning" filters
        import celltypist

    threshold = check_threshold(unknown_threshold)
    t0 = time.perf_counter()

    def exists(p):
        return celltypist_file(p).exists()

    saved = resolve_reference(reference, model_path, labels_key=labels_key, saved_exists=exists,
                              method="celltypist")
    if saved is not None and is_anndata(reference):  # model_path holds a model: the same reference?
        stored = _load_profiles(celltypist_file(saved))
        now = reference_fingerprint(reference, labels_key)
        if stored is None or stored[3].get("hash") != now["hash"] or stored[3].get("labels_key") != labels_key:
            raise ValueError(f"model_path {str(model_path)!r} holds a CellTypist model trained on another reference "
                             "or other labels (or not recorded): use another model_path (or delete it) to train on "
                             "this reference, or pass the saved model as the reference to reuse it.")
    opts = dict(C=C, feature_selection=feature_selection, top_genes=top_genes, use_SGD=use_SGD, n_jobs=n_jobs,
                balance_cell_type=balance_cell_type)
    if max_iter is not None:
        opts["max_iter"] = int(max_iter)
    params = dict(method="celltypist", labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                  unknown_threshold=threshold, random_state=int(random_state),
                  min_shared_genes=int(min_shared_genes), **opts)
    out: dict = {}
    np.random.seed(int(random_state))  # CellTypist/sklearn draw from numpy's global generator
    with quiet(verbose):
        if saved is not None:
            f = celltypist_file(saved)
            if not f.exists():
                raise FileNotFoundError(f"{saved} holds no CellTypist model (expected {f.name}).")
            model = celltypist.models.Model.load(str(f))
            genes = list(map(str, model.features))
            n_shared = len(shared_genes(map(str, query.var_names), genes, min_shared=min(min_shared_genes, len(genes)),
                                        what="query and the saved model"))
            out.update(loaded_from=str(f), n_reference_genes=len(genes))
            train = {}
            stored = _load_profiles(f)
            xr, y, classes, _, profile_genes = stored if stored is not None else (None, None, None, None, genes)
        else:
            genes = shared_genes(map(str, query.var_names), list(map(str, reference.var_names)),
                                 min_shared=min_shared_genes)
            keep, labels = reference_labels(reference, labels_key)
            n_shared = len(genes)
            xr = lognorm_over(reference, reference_layer, genes, name="reference")[keep]
            classes = sorted(set(labels))
            y = np.searchsorted(np.array(classes), labels)
            profile_genes = genes
            t1 = time.perf_counter()
            with warnings.catch_warnings(), _celltypist_sklearn_compat() as patched:
                warnings.simplefilter("ignore")
                model = celltypist.train(xr, labels=labels, genes=genes, check_expression=False, **opts)
            if patched and not use_SGD and not feature_selection:
                opts["classifier"] = "one-vs-rest LogisticRegression (scikit-learn >= 1.8 compatibility)"
            train = dict(seconds=time.perf_counter() - t1, n_cells=int(len(keep)), **opts)
            out["n_reference_genes"] = int(reference.n_vars)
            if model_path is not None:
                f = celltypist_file(Path(model_path))
                f.parent.mkdir(parents=True, exist_ok=True)
                model.write(str(f))
                _save_profiles(f, xr, y, classes, genes, reference_fingerprint(reference, labels_key))
                out["model_path"] = str(f)
        xq = lognorm_over(query, layer, genes, name="query")
        # the "Unknown" profiles are over the reference's shared genes (CellTypist may keep fewer)
        xs = xq if profile_genes == genes else lognorm_over(query, layer, profile_genes, name="query")
        qa = ad.AnnData(X=xq, var=pd.DataFrame(index=pd.Index(genes)),
                        obs=pd.DataFrame(index=pd.Index([f"c{i}" for i in range(xq.shape[0])])))
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = celltypist.annotate(qa, model=model, majority_voting=False)
        out["predict_seconds"] = time.perf_counter() - t1
    probs = res.probability_matrix
    probs = pd.DataFrame(probs.to_numpy(dtype=np.float64), columns=list(map(str, probs.columns)))
    out.update(probabilities=probs, n_shared_genes=n_shared, n_model_genes=len(genes), train=train,
               **similarity_unknown(xr, y, classes, xs, probs, threshold))
    write_annotation(query, out, method="celltypist", params=params, key_added=key_added, t0=t0)
    return None
