"""Spatial deconvolution: the dispatcher the R package's ``Deconvolve()`` calls.

``deconvolve(spatial, reference, labels_key=..., method=...)`` estimates, for every spot of a
spatial transcriptomics experiment, how many cells of each reference cell type it holds, with

- ``method="cell2location"``: :func:`pybridge.tl.cell2location` (Kleshchevnikov et al. 2022,
  *Nat Biotechnol* 40:661; Bayesian, GPU-capable);
- ``method="nnls"``: :func:`pybridge.tl.nnls` (Poisson-weighted non-negative least squares on
  the reference's mean counts per type; seconds on a CPU: a quick look and a baseline).

Both write the same layout (:mod:`pybridge.tl._deconv_common`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pandas as pd

from .._device import resolve_device
from ._cell2location import cell2location
from ._deconv_common import DOC_RAISES, DOC_REFERENCE, DOC_SIGNATURES, DOC_SPATIAL, DOC_WARNS
from ._nnls import nnls

_METHODS = ("cell2location", "nnls")


def deconvolve(
    spatial,
    reference=None,
    *,
    labels_key: str | None = None,
    method: str = "cell2location",
    layer: str | None = None,
    reference_layer: str | None = None,
    batch_key: str | None = None,
    categorical_covariate_keys: Sequence[str] | None = None,
    spatial_batch_key: str | None = None,
    n_cells_per_location: float = 30,
    detection_alpha: float = 20,
    reference_max_epochs: int = 250,
    max_epochs: int = 30000,
    reference_genes: str = "all",
    batch_size: int | None = None,
    num_samples: int = 1000,
    lr: float | None = None,
    model_kwargs: dict | None = None,
    signatures: pd.DataFrame | None = None,
    reference_model_path: str | None = None,
    save_reference_model: str | None = None,
    device: str = "auto",
    backend: str = "pybridge",
    verbose: bool | None = None,
    progress_bar: bool | None = None,
    key_added: str | None = None,
    random_state: int | None = 0,
) -> dict:
    """Estimate cell-type abundances per spot of a spatial experiment from a single-cell reference.

    Calls :func:`pybridge.tl.cell2location` or :func:`pybridge.tl.nnls` with the arguments that
    method uses (the others are ignored); their docstrings describe each argument.

    Parameters
    ----------
    {spatial}
    {reference}
    method
        ``"cell2location"`` (default) or ``"nnls"`` (point estimates only).
    batch_key, categorical_covariate_keys, spatial_batch_key, detection_alpha, reference_max_epochs, \
max_epochs, reference_genes, batch_size, num_samples, lr, model_kwargs, reference_model_path, \
save_reference_model, random_state, backend
        cell2location only (see :func:`pybridge.tl.cell2location`).
    n_cells_per_location
        Expected number of cells per spot (> 0); ``nnls`` scales its abundances to this mean.
    {signatures}
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``; ``nnls`` always runs on the CPU (the value is
        only checked).
    verbose
        Progress and messages; ``None`` follows ``pybridge.settings.verbosity``.
    progress_bar
        Older spelling of ``verbose`` (wins when given).
    key_added
        Prefix of the keys written (``None``: the method's name, ``"cell2location"`` or ``"nnls"``).

    Returns
    -------
    dict
        The summary stored in ``spatial.uns[key_added]``.

    Writes
    ------
    ``spatial.obsm[f"{{key_added}}_mean"]``, ``_q05``, ``_q95``
        DataFrames, spots x cell types (float64): estimated number of cells of each type per
        spot (posterior mean and 5%/95% quantiles: cell2location's ``means_cell_abundance_w_sf``,
        ``q05_cell_abundance_w_sf`` and ``q95_cell_abundance_w_sf``). ``nnls`` writes ``_mean`` only.
    ``spatial.obsm[f"{{key_added}}_proportions"]``
        DataFrame, spots x cell types: mean abundance / spot total (rows sum to 1; 0 for a spot
        with no estimated cells).
    ``spatial.uns[key_added]``
        ``{{"method", "params", "cell_types", "genes", "n_genes", "signatures", "quantiles",
        "detection_mean" | "scale", "history", "seconds"}}``.
    ``reference.varm[f"{{key_added}}_signatures"]``
        DataFrame, reference genes x cell types; NaN for genes not used.

    {raises}
    ValueError
        Unknown ``method``.

    {warns}

    Notes
    -----
    On any error ``spatial`` (and ``reference``) are left untouched: every check and all the
    fitting happen on private copies before anything is written.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}.")
    if progress_bar is not None:
        verbose = bool(progress_bar)
    key_added = method if key_added is None else key_added
    if method == "nnls":
        with contextlib.suppress(RuntimeError):  # scipy on the CPU: the device is only checked
            resolve_device(device, backend="torch")
        if reference_model_path is not None and signatures is None:
            raise ValueError("reference_model_path holds a cell2location RegressionModel; use method='cell2location' "
                             "or pass signatures=.")
        return nnls(spatial, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                    n_cells_per_location=n_cells_per_location, signatures=signatures, key_added=key_added)
    return cell2location(
        spatial, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer, batch_key=batch_key,
        categorical_covariate_keys=categorical_covariate_keys, spatial_batch_key=spatial_batch_key,
        n_cells_per_location=n_cells_per_location, detection_alpha=detection_alpha,
        reference_max_epochs=reference_max_epochs, max_epochs=max_epochs, reference_genes=reference_genes,
        batch_size=batch_size, num_samples=num_samples, lr=lr, model_kwargs=model_kwargs, signatures=signatures,
        reference_model_path=reference_model_path, save_reference_model=save_reference_model, device=device,
        backend=backend, verbose=verbose, key_added=key_added, random_state=random_state)


deconvolve.__doc__ = deconvolve.__doc__.format(spatial=DOC_SPATIAL, reference=DOC_REFERENCE,
                                               signatures=DOC_SIGNATURES, raises=DOC_RAISES, warns=DOC_WARNS)
