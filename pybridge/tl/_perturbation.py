"""Perturbation scoring: the dispatcher R's ``ScorePerturbation()`` calls.

Three published methods, each in its own module with its own public function:

- ``method="augur"`` -> :func:`pybridge.tl.augur` (:mod:`._augur`; Skinnider et al. 2021,
  Nat Biotechnol 39:30): which cell types respond most to a condition.
- ``method="mixscape"`` -> :func:`pybridge.tl.mixscape` (:mod:`._mixscape`; Papalexi et al.
  2021, Nat Genet 53:322; Seurat ``CalcPerturbSig`` + ``RunMixscape``, pertpy ``Mixscape``):
  which guide-carrying cells of a CRISPR screen were really knocked out (KO) and which escaped (NP).
- ``method="insilico"`` -> :func:`pybridge.tl.insilico_deletion` (:mod:`._insilico`; Theodoris
  et al. 2023, Nature 618:616, Geneformer): which genes, when deleted, move cells towards a goal
  state, compared with deleting random genes of matched expression.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .._core import check_obs_key, check_obs_level

_METHODS = ("augur", "mixscape", "insilico")


def score_perturbation(
    adata,
    *,
    condition_key: str,
    control: str,
    method: str = "augur",
    perturbed: str | Sequence[str] | None = None,
    cell_type_key: str | None = None,
    layer: str | None = None,
    key_added: str | None = None,
    device: str = "auto",
    random_state: int = 0,
    # augur
    subsample_size: int = 20,
    n_subsamples: int = 50,
    folds: int = 3,
    feature_perc: float = 0.5,
    var_quantile: float = 0.5,
    n_estimators: int = 100,
    max_features: int = 2,
    min_cells: int | None = None,
    n_jobs: int = 1,
    # mixscape
    split_key: str | None = None,
    n_neighbors: int = 20,
    n_pcs: int = 40,
    logfc_threshold: float = 0.25,
    pval_cutoff: float = 0.05,
    min_pct: float = 0.1,
    min_de_genes: int = 5,
    iter_num: int = 10,
    # insilico
    model=None,
    genes: str | Sequence[str] | None = None,
    groups: str | Sequence[str] | None = None,
    goal: str | None = None,
    n_random: int = 50,
    max_cells: int | None = 500,
    batch_size: int = 4096,
    verbose: bool | None = None,
) -> pd.DataFrame:
    """Score a perturbation with one method; the arguments of the others are ignored.

    Each method's own function documents its parameters, results and errors in full:
    :func:`pybridge.tl.augur`, :func:`pybridge.tl.mixscape`,
    :func:`pybridge.tl.insilico_deletion`. This dispatcher keeps one argument list for the R
    package's ``ScorePerturbation()`` and maps it onto the method's.

    Parameters
    ----------
    adata
        :class:`~anndata.AnnData`, cells x genes, raw counts in ``X`` or ``layer``.
    condition_key
        Column of ``obs`` with the condition (augur, insilico) or the guide target (mixscape:
        ``pert_key``).
    control
        The control level (mixscape: the non-targeting label).
    method
        ``"augur"``, ``"mixscape"`` or ``"insilico"``.
    perturbed
        Augur / insilico: the one perturbed level; mixscape: the targets to classify
        (``targets``).
    cell_type_key, layer, device, random_state
        Passed on (mixscape has no cell types).
    key_added
        Prefix of the results (default: the method name).
    subsample_size, n_subsamples, folds, feature_perc, var_quantile, n_estimators, max_features, min_cells, n_jobs
        Augur (``min_cells`` also in-silico: default 5 there).
    split_key, n_neighbors, n_pcs, logfc_threshold, pval_cutoff, min_pct, min_de_genes, iter_num
        Mixscape (``split_key`` is its ``split_by``).
    model, genes, groups, goal, n_random, max_cells, batch_size
        In-silico deletion.
    verbose
        Progress lines (``None``: ``pybridge.settings.verbosity``).

    Returns
    -------
    pandas.DataFrame
        The method's table, also in ``uns[key_added]["table"]``.

    Raises
    ------
    KeyError
        ``condition_key`` / ``cell_type_key`` / ``split_key`` / ``layer`` missing (lists what exists).
    ValueError
        An unknown ``method``; ``control`` not a level (lists the levels); and the method's own
        errors.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, got {method!r}.")
    check_obs_key(adata, condition_key, what="condition_key")
    check_obs_level(adata, condition_key, control, what="control")
    if cell_type_key is not None:
        check_obs_key(adata, cell_type_key, what="cell_type_key")
    key = key_added or method
    if method == "augur":
        from ._augur import augur

        return augur(adata, condition_key, control, perturbed=perturbed, cell_type_key=cell_type_key, layer=layer,
                     subsample_size=subsample_size, n_subsamples=n_subsamples, folds=folds,
                     feature_perc=feature_perc, var_quantile=var_quantile, n_estimators=n_estimators,
                     max_features=max_features, min_cells=min_cells, n_jobs=n_jobs, random_state=random_state,
                     key_added=key, device=device, verbose=verbose)
    if method == "mixscape":
        from ._mixscape import mixscape

        if split_key is not None:
            check_obs_key(adata, split_key, what="split_key")
        return mixscape(adata, condition_key, control, targets=perturbed, split_by=split_key, layer=layer,
                        n_neighbors=n_neighbors, n_pcs=n_pcs, logfc_threshold=logfc_threshold,
                        pval_cutoff=pval_cutoff, min_pct=min_pct, min_de_genes=min_de_genes, iter_num=iter_num,
                        random_state=random_state, key_added=key, device=device, verbose=verbose)
    from ._insilico import insilico_deletion

    return insilico_deletion(adata, condition_key, control, model=model, genes=genes, perturbed=perturbed,
                             goal=goal, cell_type_key=cell_type_key, groups=groups, layer=layer, n_random=n_random,
                             max_cells=max_cells, min_cells=5 if min_cells is None else int(min_cells),
                             batch_size=batch_size, device=device, random_state=random_state, key_added=key,
                             verbose=verbose)
