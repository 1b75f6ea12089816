"""Cell-type annotation by label transfer: the dispatcher R's ``AnnotateCells`` calls.

One function per method does the work (scanpy style, one module each):
:func:`pybridge.tl.annotate_tosica` (:mod:`._tosica`), :func:`pybridge.tl.annotate_scanvi`
(:mod:`._scanvi`), :func:`pybridge.tl.annotate_celltypist` (:mod:`._celltypist`); the
outputs they share are written by :mod:`._label_transfer`.
"""

from __future__ import annotations

import inspect
from importlib import import_module

METHODS = ("tosica", "scanvi", "celltypist")
_FUNCTIONS = {"tosica": ("._tosica", "annotate_tosica"), "scanvi": ("._scanvi", "annotate_scanvi"),
              "celltypist": ("._celltypist", "annotate_celltypist")}
# arguments annotate() always passes; a method that has no use for one accepts only its default
_COMMON_DEFAULTS = dict(gene_sets=None, max_epochs=None, batch_size=None, learning_rate=None, device="auto")


def method_function(method: str):
    """The per-method function behind ``annotate(method=...)``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    module, name = _FUNCTIONS[method]
    return getattr(import_module(module, __package__), name)


def annotate(
    query,
    reference=None,
    *,
    labels_key: str | None = None,
    method: str = "tosica",
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
    **kwargs,
):
    """Transfer cell-type labels from a labelled reference to a query (any method).

    Calls the method's own function with the same arguments:

    - ``"tosica"`` (default): :func:`pybridge.tl.annotate_tosica`, pybridge's TOSICA-style
      transformer over gene-set tokens (Chen et al. 2023, Nat Commun 14:223); also returns the
      per-cell attention over gene sets.
    - ``"scanvi"``: :func:`pybridge.tl.annotate_scanvi`, scvi-tools scANVI (Xu et al. 2021,
      Mol Syst Biol 17:e9620) trained on reference + query.
    - ``"celltypist"``: :func:`pybridge.tl.annotate_celltypist`, a custom CellTypist model
      (Dominguez Conde et al. 2022, Science 376:eabl5197); nothing is downloaded.

    Parameters
    ----------
    query
        AnnData, raw counts in ``X`` (or ``layers[layer]``), cells x genes. Written into.
    reference
        AnnData with raw counts and ``obs[labels_key]``; or (``tosica``) a directory saved by
        ``TOSICA.save`` / a previous ``annotate(model_path=...)``; or (``celltypist``) a
        ``.pkl`` model written by CellTypist / a directory holding ``celltypist_model.pkl``.
    labels_key
        Reference ``obs`` column with the cell types (needed to train). NA labels are left out
        (the number is logged); types with fewer than 10 cells are named in a warning; fewer
        than two types is an error.
    method
        ``"tosica"``, ``"scanvi"`` or ``"celltypist"``.
    layer, reference_layer
        Layers of query / reference holding counts (``None``: ``X``).
    gene_sets
        ``tosica`` only: ``None`` (embedded human GO-BP), a GMT path or ``{name: genes}``.
    unknown_threshold
        ``"auto"`` (default): a cell is ``"Unknown"`` when it does not resemble the reference
        cells of its predicted type: correlation of its standardised profile with their mean
        below that type's own threshold, the 5% quantile of its held-out (leave-one-out)
        reference cells (types with < 30 reference cells: all reference cells pooled), lowered
        as much as the query's cells of that type resemble it less than its reference cells do,
        e.g. another platform (never raised). Query types the reference lacks become
        "Unknown". ``uns[key_added]['unknown_rule']['thresholds']`` gives the threshold
        applied per type. A number in [0, 1]: when its highest class probability is below it
        (0: never).
    max_epochs, batch_size, learning_rate
        Training length, cells per step and step size (tosica, scanvi). ``None``: the method's
        default (tosica: 20 epochs; scanvi: SCVI 100 epochs + SCANVI 20, batch 128).
    model_path
        ``tosica``/``celltypist``: if it holds a model, the model is loaded from it and the
        reference is not trained again; otherwise the trained model is saved there.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (tosica, scanvi; CellTypist runs on CPU).
    key_added
        Results: ``obs[key_added]`` (categorical labels incl. ``"Unknown"``),
        ``obs[key_added + "_probability"]`` (float in [0, 1]),
        ``obs[key_added + "_similarity"]`` (the "Unknown" score, with ``"auto"``),
        ``obsm[key_added + "_probabilities"]`` (DataFrame cells x classes), for tosica
        ``obsm[key_added + "_attention"]`` (DataFrame cells x gene sets), and
        ``uns[key_added]`` (method, parameters, gene counts, timings).
    random_state
        Seed.
    min_shared_genes
        Error when query and reference share fewer genes.
    verbose
        Log progress (``None``: follow ``pybridge.settings.verbosity``).
    **kwargs
        Options of the method's function (see each).

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
        that are not counts; fewer than two labelled types; no reference and no saved model;
        an option the method does not use.
    TypeError
        Unknown method options.
    """
    fun = method_function(method)
    accepted = inspect.signature(fun).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    bad = sorted(k for k in kwargs if k not in accepted and not takes_any)
    if bad:
        own = sorted(k for k, p in accepted.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
        raise TypeError(f"annotate(method={method!r}) got unknown option(s) {', '.join(bad)}. "
                        f"Options for {method}: {', '.join(own)}.")
    args = dict(labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                unknown_threshold=unknown_threshold, model_path=model_path, key_added=key_added,
                random_state=random_state, min_shared_genes=min_shared_genes, verbose=verbose, **kwargs)
    given = dict(gene_sets=gene_sets, max_epochs=max_epochs, batch_size=batch_size, learning_rate=learning_rate,
                 device=device)
    for name, value in given.items():
        if name in accepted:
            args[name] = value
        elif value is not None and value != _COMMON_DEFAULTS[name] and not (name == "device" and value == "cpu"):
            raise ValueError(f"{name} is not used by method={method!r}; leave it at its default.")
    return fun(query, reference, **args)
