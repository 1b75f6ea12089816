"""Label transfer with a custom CellTypist model (:func:`annotate_celltypist`)."""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .._core import quiet, shared_genes
from ._label_transfer import check_threshold, reference_labels, resolve_reference, write_annotation


def _lognorm_over(adata, layer, genes, *, name, target_sum=1e4):
    from ..models._tosica import align_genes, counts_matrix, log_normalize

    x = counts_matrix(adata, layer, name=name)
    return log_normalize(align_genes(x, list(map(str, adata.var_names)), genes), target_sum)


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
    unknown_threshold: float = 0.5,
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
        Cells whose highest class probability is below this get the label ``"Unknown"``.
    model_path
        If it holds a model, that model is loaded; otherwise the trained model is written there
        (``celltypist_model.pkl`` in the directory, or the ``.pkl`` path itself).
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
        else:
            genes = shared_genes(map(str, query.var_names), list(map(str, reference.var_names)),
                                 min_shared=min_shared_genes)
            keep, labels = reference_labels(reference, labels_key)
            n_shared = len(genes)
            xr = _lognorm_over(reference, reference_layer, genes, name="reference")[keep]
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
                out["model_path"] = str(f)
        xq = _lognorm_over(query, layer, genes, name="query")
        qa = ad.AnnData(X=xq, var=pd.DataFrame(index=pd.Index(genes)),
                        obs=pd.DataFrame(index=pd.Index([f"c{i}" for i in range(xq.shape[0])])))
        t1 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = celltypist.annotate(qa, model=model, majority_voting=False)
        out["predict_seconds"] = time.perf_counter() - t1
    probs = res.probability_matrix
    probs = pd.DataFrame(probs.to_numpy(dtype=np.float64), columns=list(map(str, probs.columns)))
    out.update(probabilities=probs, n_shared_genes=n_shared, n_model_genes=len(genes), train=train)
    write_annotation(query, out, method="celltypist", params=params, key_added=key_added,
                     unknown_threshold=threshold, t0=t0)
    return None
