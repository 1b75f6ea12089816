"""What every deconvolution method shares: input checks, reference signatures, the result layout.

:func:`pybridge.tl.cell2location` and :func:`pybridge.tl.nnls` (and the dispatcher
:func:`pybridge.tl.deconvolve` that R calls) check their inputs with :func:`check_inputs`,
restrict the spots to the genes of the signatures with :func:`spots_on_genes`, and write
the same layout with :func:`write_results`:

``spatial.obsm[f"{key_added}_mean"]``, ``_q05``, ``_q95``
    DataFrames, spots x cell types (float64): estimated number of cells of each type per
    spot (posterior mean and 5% / 95% quantiles; ``nnls`` writes ``_mean`` only). For
    cell2location these are the package's ``adata.obsm["means_cell_abundance_w_sf"]``,
    ``["q05_cell_abundance_w_sf"]`` and ``["q95_cell_abundance_w_sf"]`` (its ``export_posterior``),
    with plain cell-type names as columns.
``spatial.obsm[f"{key_added}_proportions"]``
    DataFrame, spots x cell types: mean abundance / spot total (rows sum to 1; 0 for a spot
    with no estimated cells).
``spatial.uns[key_added]``
    ``{"method", "params", "cell_types", "genes", "n_genes", "signatures", "quantiles",
    "obsm_keys", "history", "seconds", ...}`` (cell2location adds ``detection_mean`` and
    ``n_reference_genes_after_filter``; nnls ``scale``).
``reference.varm[f"{key_added}_signatures"]``
    DataFrame, reference genes x cell types (mean counts per cell of each type; for
    cell2location the package's ``varm["means_per_cluster_mu_fg"]``, the ``inf_aver`` of its
    tutorial); NaN for genes not used. Only when a reference was fitted.

Nothing is written before all the work has succeeded: on any error the inputs are untouched.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_counts, check_number, check_obs_key, clean_uns, get_matrix, is_verbose, logger, shared_genes

#: fewer shared genes than this cannot separate a dozen cell types
MIN_SHARED_GENES = 50
#: a cell type with fewer reference cells than this gets a warning naming it
MIN_CELLS_PER_TYPE = 5

# Parameter descriptions shared by the public functions' docstrings.
DOC_SPATIAL = """spatial
        AnnData, spots x genes, raw integer counts in ``X`` (or ``layer``). Results are written
        into it; its matrices are never modified."""
DOC_REFERENCE = """reference
        AnnData, cells x genes, raw integer counts in ``X`` (or ``reference_layer``), with cell
        types in ``obs[labels_key]``. Not needed when ``signatures`` is given. Only
        ``varm[f"{key_added}_signatures"]`` is added to it.
    labels_key
        Column of ``reference.obs`` holding cell types.
    layer, reference_layer
        Layers holding the raw counts (``None``: ``X``)."""
DOC_SIGNATURES = """signatures
        Reuse reference signatures (DataFrame, genes x cell types, mean counts per cell, e.g.
        ``spatial.uns[key_added]["signatures"]`` or ``reference.varm[f"{key_added}_signatures"]``
        of an earlier run); skips fitting the reference."""
DOC_RAISES = """Raises
    ------
    KeyError
        ``labels_key`` / covariates / ``layer`` missing (the existing ones are listed).
    ValueError
        Counts not raw integers; fewer than ``MIN_SHARED_GENES`` (50) genes shared (both gene
        counts are given); fewer than 2 cell types; duplicated gene names; a number out of range.
    TypeError
        ``spatial`` / ``reference`` not AnnData, ``signatures`` not a DataFrame."""
DOC_WARNS = """Warns
    -----
    UserWarning
        Reference cell types with fewer than ``MIN_CELLS_PER_TYPE`` (5) cells, naming them;
        reference cells without a label."""


@dataclass
class Inputs:
    """Checked inputs: the spot counts and what the reference side gave."""

    x_spatial: object
    source: str  # "signatures", "reference_model" or "reference"
    signatures: pd.DataFrame | None = None
    labels: pd.Series | None = None  # reference labels (cells with a label only)
    x_ref: sp.csr_matrix | None = None  # float32 copy, labelled cells only
    ref_genes: pd.Index | None = None
    ref_obs_names: pd.Index | None = None
    keep: np.ndarray | None = None  # reference cells kept (those with a label)
    t0: float = field(default_factory=time.perf_counter)


def as_csr_float32(x) -> sp.csr_matrix:
    """A fresh float32 CSR copy (inputs from R are read-only views of R memory)."""
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32, copy=True)
    return sp.csr_matrix(np.asarray(x, dtype=np.float32))


def check_anndata(x, name: str):
    import anndata as ad

    if not isinstance(x, ad.AnnData):
        raise TypeError(f"{name} must be an AnnData (cells/spots x genes), got {type(x).__name__}.")
    if not x.var_names.is_unique:
        dup = x.var_names[x.var_names.duplicated()][:3].tolist()
        raise ValueError(f"{name} has duplicated gene names (e.g. {dup}); run {name}.var_names_make_unique().")
    if x.n_obs == 0 or x.n_vars == 0:
        raise ValueError(f"{name} is empty ({x.n_obs} x {x.n_vars}).")


def check_signatures(sig) -> pd.DataFrame:
    if not isinstance(sig, pd.DataFrame):
        raise TypeError("signatures must be a pandas DataFrame (genes x cell types), e.g. "
                        "reference.varm['cell2location_signatures'] or uns['cell2location']['signatures'] "
                        f"of an earlier run; got {type(sig).__name__}.")
    sig = sig.dropna(axis=0, how="any")
    if sig.shape[1] < 2 or sig.shape[0] == 0:
        raise ValueError(f"signatures must be genes x cell types with >= 2 cell types; got {sig.shape}.")
    vals = sig.to_numpy(dtype=float)
    if not np.all(np.isfinite(vals)) or np.any(vals < 0):
        raise ValueError("signatures must hold finite, non-negative expression values (genes x cell types).")
    if not sig.index.is_unique:
        raise ValueError("signatures has duplicated gene names in its index.")
    out = sig.astype(np.float64).copy()
    out.index = out.index.astype(str)
    out.columns = out.columns.astype(str)
    return out


def reference_labels(reference, labels_key: str) -> pd.Series:
    """Reference labels as a categorical with unused levels removed; warns on NaN and tiny types."""
    lab = reference.obs[labels_key]
    lab = lab.astype("category") if not isinstance(lab.dtype, pd.CategoricalDtype) else lab.copy()
    lab = lab.cat.rename_categories(lambda c: str(c)) if len(lab.cat.categories) else lab
    n_na = int(lab.isna().sum())
    if n_na:
        warnings.warn(f"{n_na} reference cells have no {labels_key!r} label (NaN); they are left out.",
                      UserWarning, stacklevel=4)
    lab = lab.cat.remove_unused_categories()
    counts = lab.value_counts(sort=False)
    if len(counts) < 2:
        raise ValueError(f"reference obs[{labels_key!r}] has {len(counts)} cell type(s) with cells; "
                         "deconvolution needs at least 2.")
    small = counts[counts < MIN_CELLS_PER_TYPE]
    if len(small):
        desc = ", ".join(f"{k!r} ({v} cells)" for k, v in small.items())
        warnings.warn(
            f"reference cell types with fewer than {MIN_CELLS_PER_TYPE} cells: {desc}. Their signatures are "
            "unreliable; merge them into a broader type or remove them from the reference.",
            UserWarning, stacklevel=4,
        )
    return lab


def check_inputs(spatial, reference, *, labels_key, layer, reference_layer, signatures, key_added,
                 n_cells_per_location, reference_model_path=None, extra_obs_keys=(),
                 method: str = "cell2location") -> Inputs:
    """Every check that needs no fitting, in the order a user would fix them.

    ``extra_obs_keys``: reference obs columns the method also needs (batch, covariates).
    """
    t0 = time.perf_counter()
    if not isinstance(key_added, str) or not key_added:
        raise ValueError("key_added must be a non-empty string.")
    check_number("n_cells_per_location", n_cells_per_location, minimum=0, exclusive_minimum=True)
    check_anndata(spatial, "spatial")
    x_sp = get_matrix(spatial, layer)
    check_counts(x_sp, name="spatial " + (f"layer {layer!r}" if layer else "X"),
                 hint="deconvolution models counts: pass the raw spot counts (Seurat: the 'counts' slot of the "
                      "Spatial assay; AnnData: layer='counts' or X)")
    if signatures is not None:
        return Inputs(x_sp, "signatures", signatures=check_signatures(signatures), t0=t0)
    if reference_model_path is not None:
        return Inputs(x_sp, "reference_model", t0=t0)
    if reference is None:
        raise ValueError("pass a reference (AnnData with cell types in obs[labels_key]) or signatures="
                         + (" or reference_model_path=." if method == "cell2location" else "."))
    check_anndata(reference, "reference")
    if labels_key is None:
        cols = ", ".join(map(str, reference.obs.columns)) or "(none)"
        raise ValueError(f"labels_key is required with a reference: the obs column with cell types. "
                         f"Columns that exist: {cols}.")
    check_obs_key(reference, labels_key, what="labels_key")
    for what, k in extra_obs_keys:
        check_obs_key(reference, k, what=what)
    labels = reference_labels(reference, labels_key)
    x_ref_raw = get_matrix(reference, reference_layer)
    check_counts(x_ref_raw, name="reference " + (f"layer {reference_layer!r}" if reference_layer else "X"),
                 hint="pass the reference's raw counts (Seurat: the 'counts' slot; AnnData: layer='counts' or X)")
    ref_genes = reference.var_names.astype(str)
    # before any fitting: enough genes in common at all?
    shared_genes(spatial.var_names.astype(str), ref_genes, min_shared=MIN_SHARED_GENES,
                 what="spatial data and reference")
    keep = ~labels.isna().to_numpy()
    x_ref = as_csr_float32(x_ref_raw)
    if not keep.all():
        x_ref = x_ref[keep]
        labels = labels[keep].cat.remove_unused_categories()
    return Inputs(x_sp, "reference", labels=labels, x_ref=x_ref, ref_genes=pd.Index(ref_genes),
                  ref_obs_names=reference.obs_names.astype(str)[keep], keep=keep, t0=t0)


def spots_on_genes(spatial, x_spatial, sig: pd.DataFrame):
    """(genes, signatures on them, float32 CSR spot counts on them) for the shared genes."""
    genes = shared_genes(spatial.var_names.astype(str), list(sig.index), min_shared=MIN_SHARED_GENES,
                         what="spatial data and reference signatures")
    pos = pd.Index(spatial.var_names.astype(str)).get_indexer(genes)
    return genes, sig.loc[genes], as_csr_float32(x_spatial)[:, pos]


def frame(values, index, columns) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, dtype=np.float64), index=pd.Index(index), columns=pd.Index(columns))


def write_results(spatial, reference, inputs: Inputs, *, method: str, key_added: str, abundances: dict,
                  cell_types, genes, signatures: pd.DataFrame, params: dict, history: dict, seconds: dict,
                  extra: dict, verbose: bool | None = None) -> dict:
    """Write the layout of the module docstring into ``spatial`` (and ``reference.varm``); return
    the summary stored in ``spatial.uns[key_added]``."""
    quantiles = [q for q in ("mean", "q05", "q95") if q in abundances]
    frames = {q: frame(abundances[q], spatial.obs_names, cell_types) for q in quantiles}
    mean = frames["mean"].to_numpy()
    tot = mean.sum(1, keepdims=True)
    prop = np.divide(mean, tot, out=np.zeros_like(mean), where=tot > 0)
    frames["proportions"] = frame(prop, spatial.obs_names, cell_types)
    seconds = {**seconds, "total": float(time.perf_counter() - inputs.t0)}
    summary = {
        "method": method,
        "params": clean_uns({**params, "signatures_source": inputs.source}),
        "cell_types": np.asarray(cell_types, dtype=object),
        "genes": np.asarray(genes, dtype=object),
        "n_genes": len(genes),
        "quantiles": np.asarray(quantiles + ["proportions"], dtype=object),
        "signatures": signatures.astype(np.float64),
        "history": history,
        "seconds": {k: float(v) for k, v in seconds.items()},
        "obsm_keys": np.asarray([f"{key_added}_{q}" for q in frames], dtype=object),
        **extra,
    }
    for q, df in frames.items():
        spatial.obsm[f"{key_added}_{q}"] = df
    spatial.uns[key_added] = summary
    if inputs.source == "reference" and reference is not None:
        full = pd.DataFrame(np.nan, index=reference.var_names, columns=pd.Index(cell_types), dtype=np.float64)
        full.loc[signatures.index, :] = signatures.to_numpy(dtype=np.float64)
        reference.varm[f"{key_added}_signatures"] = full
    if is_verbose(verbose):
        logger.info("deconvolve (%s): %d spots, %d cell types, %d genes, %.1f s", method, spatial.n_obs,
                    len(cell_types), len(genes), seconds["total"])
    return summary
