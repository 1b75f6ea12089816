"""Spatial deconvolution: cell2location (Bayesian, GPU-capable) and a fast NNLS baseline.

``deconvolve(spatial, reference, labels_key=...)`` estimates, for every spot of a spatial
transcriptomics experiment, how many cells of each reference cell type it holds.

- ``method="cell2location"``: Kleshchevnikov et al. 2022, *Nat Biotechnol* 40:661
  (cell2location package). Reference signatures come from cell2location's ``RegressionModel``
  (negative-binomial regression of the single-cell counts per cell type, with batch and
  technical covariates), after its permissive gene filter; the spots are then mapped with
  ``Cell2location`` (hyperparameters ``N_cells_per_location`` and ``detection_alpha``).
  Signatures can be reused (``signatures=`` or ``reference_model_path=``) so a reference is
  fitted once.
- ``method="nnls"``: non-negative least squares (Lawson & Hanson 1974; :func:`scipy.optimize.nnls`)
  of each spot's counts on the reference's mean counts per cell of each type, Poisson-weighted.
  Seconds on a CPU: a quick look and a baseline.

Both write the same layout into ``spatial`` (see :func:`deconvolve`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._device import lightning_kwargs, resolve_device
from .._core import check_counts, check_obs_key, get_matrix, logger, shared_genes

_METHODS = ("cell2location", "nnls")
#: fewer shared genes than this cannot separate a dozen cell types
MIN_SHARED_GENES = 50
#: a cell type with fewer reference cells than this gets a warning naming it
MIN_CELLS_PER_TYPE = 5
_QUANTILES = {"mean": "means", "q05": "q05", "q95": "q95"}


# ----------------------------------------------------------------------------- helpers


def _as_csr_float32(x) -> sp.csr_matrix:
    """A fresh float32 CSR copy (inputs from R are read-only views of R memory)."""
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float32, copy=True)
    return sp.csr_matrix(np.asarray(x, dtype=np.float32))


def _check_anndata(x, name: str):
    import anndata as ad

    if not isinstance(x, ad.AnnData):
        raise TypeError(f"{name} must be an AnnData (cells/spots x genes), got {type(x).__name__}.")
    if not x.var_names.is_unique:
        dup = x.var_names[x.var_names.duplicated()][:3].tolist()
        raise ValueError(f"{name} has duplicated gene names (e.g. {dup}); run {name}.var_names_make_unique().")
    if x.n_obs == 0 or x.n_vars == 0:
        raise ValueError(f"{name} is empty ({x.n_obs} x {x.n_vars}).")


def _check_signatures(sig) -> pd.DataFrame:
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


def _labels(reference, labels_key: str) -> pd.Series:
    """Reference labels as a categorical with unused levels removed; warns on NaN and tiny types."""
    lab = reference.obs[labels_key]
    lab = lab.astype("category") if not isinstance(lab.dtype, pd.CategoricalDtype) else lab.copy()
    lab = lab.cat.rename_categories(lambda c: str(c)) if len(lab.cat.categories) else lab
    n_na = int(lab.isna().sum())
    if n_na:
        warnings.warn(f"{n_na} reference cells have no {labels_key!r} label (NaN); they are left out.",
                      UserWarning, stacklevel=3)
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
            UserWarning, stacklevel=3,
        )
    return lab


@contextlib.contextmanager
def _quiet_training(progress_bar: bool):
    """Silence Lightning's banner lines (GPU/TPU availability, tips) and known-harmless warnings;
    scvi-tools' own messages stay when progress is wanted. Progress bars are not logging."""
    names = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if not progress_bar or lg.name != "scvi":
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Lightning's routine notes (full-batch training, no validation set), not problems
            for pat in (".*does not have many workers.*", ".*num_workers.*", ".*number of training batches.*",
                        ".*val_dataloader.*", ".*treespec.*", ".*Trying to infer the `batch_size`.*",
                        ".*`use_gpu`.*", ".*LeafSpec.*"):
                warnings.filterwarnings("ignore", message=pat)
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextlib.contextmanager
def _silent(progress_bar: bool):
    """scvi's posterior-sampling bars (tqdm on stdout) ignore show_progress for local variables."""
    if progress_bar:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@contextlib.contextmanager
def _no_show():
    """cell2location's gene filter draws a figure and calls plt.show(); keep it off screen."""
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    show = plt.show
    plt.show = lambda *a, **k: None
    try:
        yield
    finally:
        plt.show = show
        for n in set(plt.get_fignums()) - before:
            plt.close(n)


_INT_MODEL_KWARGS = ("n_groups",)


def _model_kwargs(kw: dict | None) -> dict:
    """Cell2location's priors must be floats (an int becomes a Long tensor and breaks sampling);
    its sizes (``n_groups``) must be ints (R sends every number as a double)."""

    def conv(k, v):
        if isinstance(v, dict):
            return {kk: conv(kk, vv) for kk, vv in v.items()}
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            return v
        return int(v) if k in _INT_MODEL_KWARGS else float(v)

    return {str(k): conv(str(k), v) for k, v in (kw or {}).items()}


def _train_kwargs(device: str) -> dict:
    """scvi-tools' Pyro ``train()``/``sample_posterior()`` take ``accelerator`` + ``device``."""
    lk = lightning_kwargs(device)
    dev = lk["devices"]
    if isinstance(dev, list):
        dev = dev[0]
    elif lk["accelerator"] == "gpu":
        dev = "auto"
    else:
        dev = "auto"
    return {"accelerator": lk["accelerator"], "device": dev}


def _frame(values, index, columns) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, dtype=np.float64), index=pd.Index(index), columns=pd.Index(columns))


# ----------------------------------------------------------------------- signatures


def _filter_reference_genes(x: sp.csr_matrix, var_names) -> list[str]:
    """cell2location's permissive gene filter (cell2location.utils.filtering.filter_genes)."""
    import anndata as ad
    from cell2location.utils.filtering import filter_genes

    tmp = ad.AnnData(X=x, var=pd.DataFrame(index=pd.Index(var_names)))
    with _no_show(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) for undetected genes
        kept = filter_genes(tmp, cell_count_cutoff=5, cell_percentage_cutoff2=0.03, nonz_mean_cutoff=1.12)
    return [str(g) for g in kept]


def _mean_signatures(x: sp.csr_matrix, labels: pd.Series, genes) -> pd.DataFrame:
    """Mean counts per cell of each type (genes x cell types)."""
    codes = labels.cat.codes.to_numpy()
    keep = codes >= 0
    k = len(labels.cat.categories)
    ind = sp.csr_matrix((np.ones(keep.sum()), (codes[keep], np.flatnonzero(keep))), shape=(k, x.shape[0]))
    sums = np.asarray((ind @ x).todense())
    n = np.asarray(ind.sum(1)).ravel()
    return pd.DataFrame((sums / n[:, None]).T, index=pd.Index(genes), columns=pd.Index(labels.cat.categories))


def _regression_signatures(ref_ad, *, labels_key, batch_key, categorical_covariate_keys, max_epochs,
                           batch_size, num_samples, tkw, progress_bar, save_path):
    """Fit cell2location's RegressionModel; return (signatures genes x types, model history)."""
    from cell2location.models import RegressionModel

    RegressionModel.setup_anndata(ref_ad, labels_key=labels_key, batch_key=batch_key,
                                  categorical_covariate_keys=categorical_covariate_keys)
    mod = RegressionModel(ref_ad)
    mod.train(max_epochs=int(max_epochs), batch_size=batch_size or 2500, enable_progress_bar=progress_bar, **tkw)
    with _silent(progress_bar):
        ref_ad = mod.export_posterior(ref_ad, sample_kwargs={"num_samples": num_samples, "batch_size": 2500,
                                                             "show_progress": progress_bar, **tkw})
    if save_path is not None:
        mod.save(str(save_path), overwrite=True, save_anndata=True)
    return _signatures_from_model(mod, ref_ad), _history(mod)


def _signatures_from_model(mod, ref_ad) -> pd.DataFrame:
    names = [str(n) for n in mod.factor_names_]
    cols = [f"means_per_cluster_mu_fg_{n}" for n in mod.factor_names_]
    if "means_per_cluster_mu_fg" in ref_ad.varm:
        sig = ref_ad.varm["means_per_cluster_mu_fg"][cols].copy()
    else:  # cell2location falls back to var when varm rejects the frame
        sig = ref_ad.var[cols].copy()
    sig.columns = names
    sig.index = sig.index.astype(str)
    return sig.astype(np.float32)


def _load_reference_model(path, *, num_samples, tkw):
    from cell2location.models import RegressionModel

    if not os.path.isdir(str(path)):
        raise FileNotFoundError(f"reference_model_path {str(path)!r} is not a directory holding a saved "
                                "cell2location RegressionModel (model.save(dir, save_anndata=True)).")
    mod = RegressionModel.load(str(path), **tkw)
    ref_ad = mod.export_posterior(mod.adata, sample_kwargs={"num_samples": num_samples, "batch_size": 2500, **tkw})
    return _signatures_from_model(mod, ref_ad)


def _history(mod) -> dict:
    out = {}
    for k, v in (getattr(mod, "history", None) or {}).items():
        with contextlib.suppress(TypeError, ValueError):  # history entries are DataFrames of floats
            out[k] = np.asarray(v).ravel().astype(np.float64)
    return out


# -------------------------------------------------------------------------- mapping


def _map_cell2location(x_sp: sp.csr_matrix, obs_names, genes, sig, *, spatial_obs, spatial_batch_key,
                       n_cells_per_location, detection_alpha, max_epochs, batch_size, num_samples, tkw,
                       progress_bar, lr=None, model_kwargs=None):
    import anndata as ad
    from cell2location.models import Cell2location

    obs = pd.DataFrame(index=pd.Index(obs_names))
    if spatial_batch_key is not None:
        obs[spatial_batch_key] = spatial_obs[spatial_batch_key].astype(str).to_numpy()
    sp_ad = ad.AnnData(X=x_sp, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    Cell2location.setup_anndata(sp_ad, batch_key=spatial_batch_key)
    # plain Python floats: a NumPy float64 here would turn cell2location's priors into float64
    # tensors and break its float32 matmuls
    mod = Cell2location(sp_ad, cell_state_df=sig.loc[genes].astype(np.float32),
                        N_cells_per_location=float(n_cells_per_location), detection_alpha=float(detection_alpha),
                        **_model_kwargs(model_kwargs))
    extra = {} if lr is None else {"lr": float(lr)}
    mod.train(max_epochs=int(max_epochs), batch_size=batch_size, train_size=1, enable_progress_bar=progress_bar,
              **extra, **tkw)
    with _silent(progress_bar):
        samples = mod.sample_posterior(num_samples=num_samples, batch_size=batch_size or sp_ad.n_obs,
                                       return_sites=["w_sf"], show_progress=progress_bar, **tkw)
    out = {}
    for q, name in _QUANTILES.items():
        out[q] = np.asarray(samples[f"post_sample_{name}"]["w_sf"], dtype=np.float64)
    detection = float(np.mean(mod.detection_mean_))
    return out, [str(n) for n in mod.factor_names_], _history(mod), detection


def _map_nnls(x_sp: sp.csr_matrix, sig: pd.DataFrame, n_cells_per_location: float):
    """Poisson-weighted NNLS of every spot on the signatures; returns (abundance, scale)."""
    from scipy.optimize import nnls

    s = sig.to_numpy(dtype=np.float64)  # genes x types, mean counts per reference cell
    # Poisson weights: var(y_g) ~ mu_g, so divide gene g by sqrt of its typical expression.
    mu = s.mean(axis=1)
    w = 1.0 / np.sqrt(mu + max(1e-3, 0.01 * np.median(mu[mu > 0]) if np.any(mu > 0) else 1e-3))
    a = s * w[:, None]
    y = np.asarray(x_sp.todense(), dtype=np.float64) * w[None, :]
    coef = np.empty((y.shape[0], s.shape[1]))
    for i in range(y.shape[0]):
        coef[i], _ = nnls(a, y[i])
    totals = coef.sum(1)
    mean_total = float(totals.mean())
    # Reference-cell units -> cells: platforms differ in sensitivity, so (as cell2location's
    # detection prior does) scale so that the average spot holds n_cells_per_location cells.
    scale = n_cells_per_location / mean_total if mean_total > 0 else 1.0
    return coef * scale, scale


# ---------------------------------------------------------------------------- public


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
    progress_bar: bool = False,
    key_added: str = "cell2location",
    random_state: int | None = 0,
) -> dict:
    """Estimate cell-type abundances per spot of a spatial experiment from a single-cell reference.

    Parameters
    ----------
    spatial
        AnnData, spots x genes, raw integer counts in ``X`` (or ``layer``). Results are written
        into it; its matrices are never modified.
    reference
        AnnData, cells x genes, raw integer counts in ``X`` (or ``reference_layer``), with cell
        types in ``obs[labels_key]``. Not needed when ``signatures`` or ``reference_model_path``
        is given. Only ``varm[f"{key_added}_signatures"]`` is added to it.
    labels_key
        Column of ``reference.obs`` holding cell types.
    method
        ``"cell2location"`` (Kleshchevnikov et al. 2022) or ``"nnls"`` (non-negative least squares
        on mean counts per type; seconds on CPU, point estimates only).
    layer, reference_layer
        Layers holding the raw counts (``None``: ``X``).
    batch_key, categorical_covariate_keys
        Reference batch and technical covariates (``obs`` columns) for cell2location's
        RegressionModel (ignored by ``nnls``).
    spatial_batch_key
        Column of ``spatial.obs`` naming the section/sample of each spot when several are
        mapped together (cell2location's ``batch_key`` of ``Cell2location.setup_anndata``).
    n_cells_per_location
        Expected number of cells per spot (cell2location's ``N_cells_per_location``; ~30 for
        Visium lymph node / brain). ``nnls`` scales its abundances to this mean.
    detection_alpha
        cell2location's regularisation of within-experiment variation in RNA detection
        (20 for typical Visium; 200 for low technical variation).
    reference_max_epochs, max_epochs
        Training epochs of the RegressionModel (250 recommended) and of Cell2location
        (30,000 recommended; hours on CPU for a full section, minutes on a GPU).
    reference_genes
        Genes the RegressionModel is fitted on: ``"all"`` that pass cell2location's filter (its
        tutorial's way; the signatures can map any other spatial panel), or ``"shared"``: only
        those the spatial data also measures (faster by the ratio of the two gene counts, often
        10x; signatures cover this panel only).
    batch_size
        Minibatch size for Cell2location (``None``: all spots at once, as recommended).
    num_samples
        Posterior samples drawn to summarise mean, 5% and 95% quantiles.
    lr
        Learning rate of Cell2location's ClippedAdam (``None``: its default, 0.002). A larger
        rate (0.01-0.02) converges in fewer epochs, useful for short CPU runs.
    model_kwargs
        Further hyperparameters of the Cell2location model (e.g. ``A_factors_per_location``,
        the expected number of cell types per spot, default 7; ``B_groups_per_location``).
    signatures
        Reuse reference signatures (DataFrame, genes x cell types, mean counts per cell, e.g.
        ``spatial.uns[key_added]["signatures"]`` or ``reference.varm[f"{key_added}_signatures"]``
        of an earlier run); skips fitting the reference.
    reference_model_path
        Directory of a saved cell2location ``RegressionModel`` (``save_anndata=True``) to reuse.
    save_reference_model
        Directory where the fitted RegressionModel is saved for later reuse.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`pybridge._device.resolve_device`);
        ``nnls`` always runs on the CPU.
    progress_bar
        Show training progress bars.
    key_added
        Prefix of the keys written.
    random_state
        Seed for Pyro/torch/numpy (``None``: leave the global state alone).

    Returns
    -------
    dict
        The summary stored in ``spatial.uns[key_added]`` (method, params, cell types, genes used,
        timings, training history).

    Writes
    ------
    ``spatial.obsm[f"{key_added}_mean"]``, ``_q05``, ``_q95``
        DataFrames, spots x cell types (float64): estimated number of cells of each type per
        spot (posterior mean and 5%/95% quantiles; for ``nnls`` q05 = q95 = mean is NOT
        written: only ``_mean``).
    ``spatial.obsm[f"{key_added}_proportions"]``
        DataFrame, spots x cell types: mean abundance / spot total (rows sum to 1; 0 for a spot
        with no estimated cells).
    ``spatial.uns[key_added]``
        ``{"method", "params", "cell_types", "genes", "n_genes", "signatures", "quantiles",
        "detection_mean" | "scale", "history", "seconds"}``.
    ``reference.varm[f"{key_added}_signatures"]``
        DataFrame, reference genes x cell types; NaN for genes not used.

    Raises
    ------
    KeyError
        ``labels_key``/``batch_key``/covariates/``layer`` missing (the existing ones are listed).
    ValueError
        Unknown method; counts not raw integers; fewer than ``MIN_SHARED_GENES`` (50) genes shared
        (both gene counts are given); fewer than 2 cell types; duplicated gene names.
    TypeError
        ``spatial``/``reference`` not AnnData, ``signatures`` not a DataFrame.

    Warns
    -----
    UserWarning
        Reference cell types with fewer than ``MIN_CELLS_PER_TYPE`` (5) cells, naming them;
        reference cells without a label.

    Notes
    -----
    On any error ``spatial`` (and ``reference``) are left untouched: every check and all the
    fitting happen on private copies before anything is written.
    """
    t0 = time.perf_counter()
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}.")
    if reference_genes not in ("all", "shared"):
        raise ValueError(f"reference_genes must be 'all' or 'shared'; got {reference_genes!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError("key_added must be a non-empty string.")
    _check_anndata(spatial, "spatial")
    if n_cells_per_location <= 0 or detection_alpha <= 0:
        raise ValueError("n_cells_per_location and detection_alpha must be positive.")
    if method == "nnls":  # scipy on the CPU; the device argument is only validated
        with contextlib.suppress(RuntimeError):
            resolve_device(device, backend="torch")
        dev = "cpu"
    else:
        dev = resolve_device(device, backend="torch")
    if spatial_batch_key is not None:
        check_obs_key(spatial, spatial_batch_key, what="spatial_batch_key")

    x_sp_all = get_matrix(spatial, layer)
    check_counts(x_sp_all, name="spatial " + (f"layer {layer!r}" if layer else "X"),
                 hint="deconvolution models counts: pass the raw spot counts (Seurat: the 'counts' slot of the "
                      "Spatial assay; AnnData: layer='counts' or X)")

    # --- reference side: signatures given, a saved model, or a reference to fit ------------
    sig = None
    labels = None
    x_ref = None
    ref_genes_all = None
    source = None
    if signatures is not None:
        sig = _check_signatures(signatures)
        source = "signatures"
    elif reference_model_path is not None:
        if method != "cell2location":
            raise ValueError("reference_model_path holds a cell2location RegressionModel; use method='cell2location' "
                             "or pass signatures=.")
        source = "reference_model"
    else:
        if reference is None:
            raise ValueError("pass a reference (AnnData with cell types in obs[labels_key]), signatures= "
                             "or reference_model_path=.")
        _check_anndata(reference, "reference")
        if labels_key is None:
            cols = ", ".join(map(str, reference.obs.columns)) or "(none)"
            raise ValueError(f"labels_key is required with a reference: the obs column with cell types. "
                             f"Columns that exist: {cols}.")
        check_obs_key(reference, labels_key, what="labels_key")
        if method == "cell2location":
            if batch_key is not None:
                check_obs_key(reference, batch_key, what="batch_key")
            for k in categorical_covariate_keys or []:
                check_obs_key(reference, k, what="categorical_covariate_keys entry")
        labels = _labels(reference, labels_key)
        x_ref_raw = get_matrix(reference, reference_layer)
        check_counts(x_ref_raw, name="reference " + (f"layer {reference_layer!r}" if reference_layer else "X"),
                     hint="pass the reference's raw counts (Seurat: the 'counts' slot; AnnData: layer='counts' or X)")
        ref_genes_all = reference.var_names.astype(str)
        # before any fitting: enough genes in common at all?
        shared_genes(spatial.var_names.astype(str), ref_genes_all, min_shared=MIN_SHARED_GENES,
                     what="spatial data and reference")
        keep = ~labels.isna().to_numpy()
        x_ref = _as_csr_float32(x_ref_raw)
        ref_obs_names = reference.obs_names.astype(str)[keep]
        if not keep.all():
            x_ref = x_ref[keep]
            labels = labels[keep].cat.remove_unused_categories()
        source = "reference"

    if random_state is not None:
        import pyro

        pyro.set_rng_seed(int(random_state))

    tkw = _train_kwargs(dev) if method == "cell2location" else {}
    history = {}
    n_ref_genes_kept = None
    t_ref = time.perf_counter()
    if source == "reference":
        if method == "cell2location":
            kept = _filter_reference_genes(x_ref, ref_genes_all)
            n_ref_genes_kept = len(kept)
            # enough of the kept genes must be measured in the spatial data
            in_spatial = shared_genes(spatial.var_names.astype(str), kept, min_shared=MIN_SHARED_GENES,
                                      what=f"spatial data and reference (after cell2location's gene filter kept "
                                           f"{len(kept)} of {len(ref_genes_all)} reference genes)")
            # "all": the tutorial's way (signatures reusable on any panel); "shared": only the
            # genes this spatial data measures (faster by the ratio of gene counts)
            fit_genes = kept if reference_genes == "all" else in_spatial
            import anndata as ad

            pos = pd.Index(ref_genes_all).get_indexer(fit_genes)
            obs = pd.DataFrame({labels_key: labels.to_numpy()}, index=pd.Index(ref_obs_names))
            obs[labels_key] = obs[labels_key].astype(pd.CategoricalDtype(labels.cat.categories))
            for k in [batch_key, *(categorical_covariate_keys or [])]:
                if k is not None:
                    obs[k] = reference.obs[k].astype(str).to_numpy()[keep]
            ref_ad = ad.AnnData(X=x_ref[:, pos], obs=obs, var=pd.DataFrame(index=pd.Index(fit_genes)))
            with _quiet_training(progress_bar):
                sig, h = _regression_signatures(
                    ref_ad, labels_key=labels_key, batch_key=batch_key,
                    categorical_covariate_keys=list(categorical_covariate_keys) if categorical_covariate_keys else None,
                    max_epochs=reference_max_epochs, batch_size=None, num_samples=num_samples, tkw=tkw,
                    progress_bar=progress_bar, save_path=save_reference_model)
            history.update({f"reference_{k}": v for k, v in h.items()})
        else:
            genes = shared_genes(spatial.var_names.astype(str), ref_genes_all, min_shared=MIN_SHARED_GENES,
                                 what="spatial data and reference")
            pos = pd.Index(ref_genes_all).get_indexer(genes)
            sig = _mean_signatures(x_ref[:, pos], labels, genes)
            expressed = sig.to_numpy().sum(1) > 0
            sig = sig.loc[expressed]
    elif source == "reference_model":
        with _quiet_training(progress_bar):
            sig = _load_reference_model(reference_model_path, num_samples=num_samples, tkw=tkw)
    t_ref = time.perf_counter() - t_ref

    genes = shared_genes(spatial.var_names.astype(str), list(sig.index), min_shared=MIN_SHARED_GENES,
                         what="spatial data and reference signatures")
    sig_all = sig  # every gene with a signature (kept for reuse on other panels)
    sig = sig.loc[genes]
    cell_types = [str(c) for c in sig.columns]
    pos_sp = pd.Index(spatial.var_names.astype(str)).get_indexer(genes)
    x_sp = _as_csr_float32(x_sp_all)[:, pos_sp]
    obs_names = spatial.obs_names.astype(str)

    t_map = time.perf_counter()
    if method == "cell2location":
        with _quiet_training(progress_bar):
            ab, ct, h, detection = _map_cell2location(
                x_sp, obs_names, genes, sig, spatial_obs=spatial.obs, spatial_batch_key=spatial_batch_key,
                n_cells_per_location=n_cells_per_location, detection_alpha=detection_alpha,
                max_epochs=max_epochs, batch_size=batch_size, num_samples=num_samples, tkw=tkw,
                progress_bar=progress_bar, lr=lr, model_kwargs=model_kwargs)
        history.update(h)
        cell_types = ct
        extra = {"detection_mean": detection}
        quantiles = ["mean", "q05", "q95"]
    else:
        coef, scale = _map_nnls(x_sp, sig, float(n_cells_per_location))
        ab = {"mean": coef}
        extra = {"scale": float(scale)}
        quantiles = ["mean"]
    t_map = time.perf_counter() - t_map

    frames = {q: _frame(ab[q], spatial.obs_names, cell_types) for q in quantiles}
    mean = frames["mean"].to_numpy()
    tot = mean.sum(1, keepdims=True)
    prop = np.divide(mean, tot, out=np.zeros_like(mean), where=tot > 0)
    frames["proportions"] = _frame(prop, spatial.obs_names, cell_types)

    params = {
        "method": method, "labels_key": labels_key, "layer": layer, "reference_layer": reference_layer,
        "batch_key": batch_key, "categorical_covariate_keys": list(categorical_covariate_keys or []),
        "spatial_batch_key": spatial_batch_key, "n_cells_per_location": float(n_cells_per_location),
        "detection_alpha": float(detection_alpha), "reference_max_epochs": int(reference_max_epochs),
        "max_epochs": int(max_epochs), "reference_genes": reference_genes, "batch_size": batch_size,
        "num_samples": int(num_samples),
        "lr": lr, "model_kwargs": dict(model_kwargs) if model_kwargs else None,
        "signatures_source": source, "reference_model_path": None if reference_model_path is None
        else str(reference_model_path), "device": dev, "random_state": random_state,
    }
    params = {k: v for k, v in params.items() if v is not None}
    summary = {
        "method": method,
        "params": params,
        "cell_types": np.asarray(cell_types, dtype=object),
        "genes": np.asarray(genes, dtype=object),
        "n_genes": len(genes),
        "quantiles": np.asarray(quantiles + ["proportions"], dtype=object),
        "signatures": sig_all.astype(np.float64),
        "history": history,
        "seconds": {"reference": float(t_ref), "mapping": float(t_map), "total": float(time.perf_counter() - t0)},
        "obsm_keys": np.asarray([f"{key_added}_{q}" for q in frames], dtype=object),
        **extra,
    }
    if n_ref_genes_kept is not None:
        summary["n_reference_genes_after_filter"] = n_ref_genes_kept

    # ---- everything succeeded: write (spatial first, then the reference's varm) -----------
    for q, df in frames.items():
        spatial.obsm[f"{key_added}_{q}"] = df
    spatial.uns[key_added] = summary
    if source == "reference" and reference is not None:
        full = pd.DataFrame(np.nan, index=reference.var_names, columns=pd.Index(cell_types), dtype=np.float64)
        full.loc[sig_all.index, :] = sig_all.to_numpy(dtype=np.float64)
        reference.varm[f"{key_added}_signatures"] = full
    logger.info("deconvolve (%s): %d spots, %d cell types, %d genes, %.1f s", method, spatial.n_obs,
                len(cell_types), len(genes), summary["seconds"]["total"])
    return summary
