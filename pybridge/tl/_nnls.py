"""Spatial deconvolution by non-negative least squares: a fast baseline (seconds on a CPU).

Each spot's counts are regressed, Poisson-weighted, on the reference's mean counts per cell
of each type with non-negative coefficients (Lawson & Hanson 1974, *Solving Least Squares
Problems*; :func:`scipy.optimize.nnls`), then scaled so that the average spot holds
``n_cells_per_location`` cells. Point estimates only.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_number, shared_genes
from ._deconv_common import (DOC_RAISES, DOC_REFERENCE, DOC_SIGNATURES, DOC_SPATIAL, DOC_WARNS, MIN_SHARED_GENES,
                             check_inputs, spots_on_genes, write_results)


def mean_signatures(x: sp.csr_matrix, labels: pd.Series, genes) -> pd.DataFrame:
    """Mean counts per cell of each type (genes x cell types)."""
    codes = labels.cat.codes.to_numpy()
    keep = codes >= 0
    k = len(labels.cat.categories)
    ind = sp.csr_matrix((np.ones(keep.sum()), (codes[keep], np.flatnonzero(keep))), shape=(k, x.shape[0]))
    sums = np.asarray((ind @ x).todense())
    n = np.asarray(ind.sum(1)).ravel()
    return pd.DataFrame((sums / n[:, None]).T, index=pd.Index(genes), columns=pd.Index(labels.cat.categories))


def fit_nnls(x_sp: sp.csr_matrix, sig: pd.DataFrame, n_cells_per_location: float):
    """Poisson-weighted NNLS of every spot on the signatures; returns (abundance, scale)."""
    from scipy.optimize import nnls as scipy_nnls

    s = sig.to_numpy(dtype=np.float64)  # genes x types, mean counts per reference cell
    # Poisson weights: var(y_g) ~ mu_g, so divide gene g by sqrt of its typical expression.
    mu = s.mean(axis=1)
    w = 1.0 / np.sqrt(mu + max(1e-3, 0.01 * np.median(mu[mu > 0]) if np.any(mu > 0) else 1e-3))
    a = s * w[:, None]
    y = np.asarray(x_sp.todense(), dtype=np.float64) * w[None, :]
    coef = np.empty((y.shape[0], s.shape[1]))
    for i in range(y.shape[0]):
        coef[i], _ = scipy_nnls(a, y[i])
    totals = coef.sum(1)
    mean_total = float(totals.mean())
    # Reference-cell units -> cells: platforms differ in sensitivity, so (as cell2location's
    # detection prior does) scale so that the average spot holds n_cells_per_location cells.
    scale = n_cells_per_location / mean_total if mean_total > 0 else 1.0
    return coef * scale, scale


def nnls(
    spatial,
    reference=None,
    *,
    labels_key: str | None = None,
    layer: str | None = None,
    reference_layer: str | None = None,
    n_cells_per_location: float = 30,
    signatures: pd.DataFrame | None = None,
    key_added: str = "nnls",
) -> dict:
    """Estimate cell-type abundances per spot by Poisson-weighted non-negative least squares.

    Parameters
    ----------
    {spatial}
    {reference}
    n_cells_per_location
        Expected number of cells per spot (> 0): abundances are scaled to this mean.
    {signatures}
    key_added
        Prefix of the keys written.

    Returns
    -------
    dict
        The summary stored in ``spatial.uns[key_added]``: ``method``, ``params``, ``cell_types``,
        ``genes``, ``signatures`` (genes x types, mean counts per reference cell), ``scale``
        (cells per reference-cell unit), ``seconds``.

    Writes ``spatial.obsm[f"{{key_added}}_mean"]`` (cells per spot, spots x types, float64) and
    ``_proportions``, and ``reference.varm[f"{{key_added}}_signatures"]`` (see
    :func:`pybridge.tl.deconvolve` for the layout).

    {raises}

    {warns}
    """
    n_cells_per_location = check_number("n_cells_per_location", n_cells_per_location, minimum=0,
                                        exclusive_minimum=True)
    inp = check_inputs(spatial, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                       signatures=signatures, key_added=key_added, n_cells_per_location=n_cells_per_location,
                       method="nnls")
    t_ref = time.perf_counter()
    if inp.source == "reference":
        genes = shared_genes(spatial.var_names.astype(str), inp.ref_genes, min_shared=MIN_SHARED_GENES,
                             what="spatial data and reference")
        sig = mean_signatures(inp.x_ref[:, inp.ref_genes.get_indexer(genes)], inp.labels, genes)
        sig = sig.loc[sig.to_numpy().sum(1) > 0]  # genes no reference cell expresses carry no information
    else:
        sig = inp.signatures
    t_ref = time.perf_counter() - t_ref
    genes, sig_used, x_sp = spots_on_genes(spatial, inp.x_spatial, sig)
    t_map = time.perf_counter()
    coef, scale = fit_nnls(x_sp, sig_used, float(n_cells_per_location))
    t_map = time.perf_counter() - t_map
    params = {"method": "nnls", "labels_key": labels_key, "layer": layer, "reference_layer": reference_layer,
              "n_cells_per_location": float(n_cells_per_location), "device": "cpu"}
    return write_results(spatial, reference, inp, method="nnls", key_added=key_added, abundances={"mean": coef},
                         cell_types=[str(c) for c in sig_used.columns], genes=genes, signatures=sig, params=params,
                         history={}, seconds={"reference": t_ref, "mapping": t_map}, extra={"scale": float(scale)})


nnls.__doc__ = nnls.__doc__.format(spatial=DOC_SPATIAL, reference=DOC_REFERENCE, signatures=DOC_SIGNATURES,
                                   raises=DOC_RAISES, warns=DOC_WARNS)
