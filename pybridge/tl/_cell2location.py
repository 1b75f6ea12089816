"""Spatial deconvolution with cell2location (Kleshchevnikov et al. 2022, *Nat Biotechnol* 40:661).

Reference signatures come from the package's ``RegressionModel`` (negative-binomial regression
of the single-cell counts per cell type, with batch and technical covariates) after its
permissive gene filter; the spots are then mapped with its ``Cell2location`` model
(hyperparameters ``N_cells_per_location`` and ``detection_alpha``). Signatures can be reused
(``signatures=`` or ``reference_model_path=``) so a reference is fitted once.

The models are the package's own (cell2location 0.1.5, Pyro < 1.9); only how they are driven
may differ, see ``engine`` of :func:`cell2location`.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._core import check_epochs, check_number, check_obs_key, is_verbose, lightning_progress, logger, quiet, \
    shared_genes
from .._device import lightning_kwargs, resolve_device
from ._deconv_common import (DOC_RAISES, DOC_REFERENCE, DOC_SIGNATURES, DOC_SPATIAL, DOC_WARNS, MIN_SHARED_GENES,
                             check_inputs, spots_on_genes, write_results)

_QUANTILES = {"mean": "means", "q05": "q05", "q95": "q95"}
_INT_MODEL_KWARGS = ("n_groups",)


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
    return {"accelerator": lk["accelerator"], "device": dev[0] if isinstance(dev, list) else "auto"}


def _history(mod) -> dict:
    out = {}
    for k, v in (getattr(mod, "history", None) or {}).items():
        with contextlib.suppress(TypeError, ValueError):  # history entries are DataFrames of floats
            out[k] = np.asarray(v).ravel().astype(np.float64)
    return out


# ----------------------------------------------------------------------- signatures


def filter_reference_genes(x, var_names) -> list[str]:
    """cell2location's permissive gene filter (cell2location.utils.filtering.filter_genes)."""
    import anndata as ad
    from cell2location.utils.filtering import filter_genes

    tmp = ad.AnnData(X=x, var=pd.DataFrame(index=pd.Index(var_names)))
    with _no_show(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log10(0) for undetected genes
        kept = filter_genes(tmp, cell_count_cutoff=5, cell_percentage_cutoff2=0.03, nonz_mean_cutoff=1.12)
    return [str(g) for g in kept]


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


def regression_signatures(ref_ad, *, labels_key, batch_key, categorical_covariate_keys, max_epochs, num_samples,
                          tkw, verbose, save_path):
    """Fit cell2location's RegressionModel; return (signatures genes x types, model history)."""
    from cell2location.models import RegressionModel

    RegressionModel.setup_anndata(ref_ad, labels_key=labels_key, batch_key=batch_key,
                                  categorical_covariate_keys=categorical_covariate_keys)
    mod = RegressionModel(ref_ad)
    logger.info("cell2location: fitting reference signatures (%d cells x %d genes, %d epochs)", ref_ad.n_obs,
                ref_ad.n_vars, max_epochs)
    mod.train(max_epochs=int(max_epochs), batch_size=2500, enable_progress_bar=lightning_progress(verbose), **tkw)
    with quiet(verbose, capture_output=True):  # scvi's sampling bars ignore show_progress
        ref_ad = mod.export_posterior(ref_ad, sample_kwargs={"num_samples": num_samples, "batch_size": 2500,
                                                             "show_progress": verbose, **tkw})
    if save_path is not None:
        mod.save(str(save_path), overwrite=True, save_anndata=True)
    return _signatures_from_model(mod, ref_ad), _history(mod)


def load_reference_signatures(path, *, num_samples, tkw):
    """Signatures of a saved RegressionModel (``model.save(dir, save_anndata=True)``)."""
    from cell2location.models import RegressionModel

    if not os.path.isdir(str(path)):
        raise FileNotFoundError(f"reference_model_path {str(path)!r} is not a directory holding a saved "
                                "cell2location RegressionModel (model.save(dir, save_anndata=True)).")
    mod = RegressionModel.load(str(path), **tkw)
    ref_ad = mod.export_posterior(mod.adata, sample_kwargs={"num_samples": num_samples, "batch_size": 2500, **tkw})
    return _signatures_from_model(mod, ref_ad)


# -------------------------------------------------------------------------- mapping


def _mapping_model(x_sp, obs_names, genes, sig, *, spatial_obs, spatial_batch_key, n_cells_per_location,
                   detection_alpha, model_kwargs):
    import anndata as ad
    from cell2location.models import Cell2location

    obs = pd.DataFrame(index=pd.Index(obs_names))
    if spatial_batch_key is not None:
        obs[spatial_batch_key] = spatial_obs[spatial_batch_key].astype(str).to_numpy()
    sp_ad = ad.AnnData(X=x_sp, obs=obs, var=pd.DataFrame(index=pd.Index(genes)))
    Cell2location.setup_anndata(sp_ad, batch_key=spatial_batch_key)
    # plain Python floats: a NumPy float64 here would turn cell2location's priors into float64
    # tensors and break its float32 matmuls
    return Cell2location(sp_ad, cell_state_df=sig.loc[genes].astype(np.float32),
                         N_cells_per_location=float(n_cells_per_location), detection_alpha=float(detection_alpha),
                         **_model_kwargs(model_kwargs))


class _EpochTimer:
    """Lightning callback: end time of each training epoch (steady-state time per epoch, as
    :func:`pybridge.tl._cell2location_fast.train` measures it: after the first
    ``min(10, epochs // 4)`` epochs)."""

    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class Timer(Callback):
            def __init__(self):
                self.ends = []

            def on_train_epoch_end(self, trainer, pl_module):
                self.ends.append(time.perf_counter())

            def steady(self, epochs):
                warm = min(10, epochs // 4)
                if warm < 1 or len(self.ends) < epochs:
                    return None
                return (self.ends[-1] - self.ends[warm - 1]) / (epochs - warm)

        return Timer()


def map_spots(x_sp, obs_names, genes, sig, *, spatial_obs, spatial_batch_key, n_cells_per_location, detection_alpha,
              max_epochs, batch_size, num_samples, tkw, verbose, lr=None, model_kwargs=None, backend="pybridge",
              seed=None):
    """Train cell2location's mapping model; posterior mean / 5% / 95% quantiles of ``w_sf`` (spots x types).

    ``backend="pybridge"`` drives the package's model with :mod:`pybridge.tl._cell2location_fast`
    (full batch only); ``"cell2location"`` with the package's own ``train`` / ``sample_posterior``.
    """
    from . import _cell2location_fast as fast

    mod = _mapping_model(x_sp, obs_names, genes, sig, spatial_obs=spatial_obs, spatial_batch_key=spatial_batch_key,
                         n_cells_per_location=n_cells_per_location, detection_alpha=detection_alpha,
                         model_kwargs=model_kwargs)
    logger.info("cell2location: mapping %d spots x %d genes (%d epochs, %s)", x_sp.shape[0], len(genes), max_epochs,
                backend)
    t0 = time.perf_counter()
    if backend == "pybridge" and batch_size is None:
        history, steady = fast.train(mod, max_epochs=max_epochs, lr=0.002 if lr is None else lr, tkw=tkw,
                                     verbose=verbose)
        t1 = time.perf_counter()
        out = fast.w_sf_summaries(mod, num_samples=num_samples, tkw=tkw, seed=seed)
    else:
        extra = {} if lr is None else {"lr": float(lr)}
        timer = _EpochTimer()
        mod.train(max_epochs=int(max_epochs), batch_size=batch_size, train_size=1,
                  enable_progress_bar=lightning_progress(verbose), callbacks=[timer], **extra, **tkw)
        t1 = time.perf_counter()
        steady = timer.steady(max_epochs) or (t1 - t0) / max_epochs
        with quiet(verbose, capture_output=True):
            samples = mod.sample_posterior(num_samples=num_samples, batch_size=batch_size or x_sp.shape[0],
                                           return_sites=["w_sf"], show_progress=verbose, **tkw)
        out = {q: np.asarray(samples[f"post_sample_{name}"]["w_sf"], dtype=np.float64)
               for q, name in _QUANTILES.items()}
        history = _history(mod)
    detection = float(np.mean(mod.detection_mean_))
    seconds = {"training": t1 - t0, "sampling": time.perf_counter() - t1, "training_per_epoch_steady": steady}
    return out, [str(n) for n in mod.factor_names_], history, detection, seconds


# ---------------------------------------------------------------------------- public


def cell2location(
    spatial,
    reference=None,
    *,
    labels_key: str | None = None,
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
    key_added: str = "cell2location",
    random_state: int | None = 0,
) -> dict:
    """Estimate cell-type abundances per spot with cell2location.

    Parameters
    ----------
    {spatial}
    {reference}
    batch_key, categorical_covariate_keys
        Reference batch and technical covariates (``obs`` columns) for the RegressionModel.
    spatial_batch_key
        Column of ``spatial.obs`` naming the section/sample of each spot when several are
        mapped together (cell2location's ``batch_key`` of ``Cell2location.setup_anndata``).
    n_cells_per_location
        Expected number of cells per spot (> 0; cell2location's ``N_cells_per_location``; ~30
        for Visium lymph node / brain).
    detection_alpha
        cell2location's regularisation of within-experiment variation in RNA detection (> 0;
        20 for typical Visium; 200 for low technical variation).
    reference_max_epochs, max_epochs
        Training epochs (whole numbers >= 1) of the RegressionModel (250 recommended) and of
        Cell2location (30,000 recommended; hours on CPU for a full section, minutes on a GPU).
    reference_genes
        Genes the RegressionModel is fitted on: ``"all"`` that pass cell2location's filter (its
        tutorial's way; the signatures can map any other spatial panel), or ``"shared"``: only
        those the spatial data also measures (faster by the ratio of the two gene counts, often
        10x; signatures cover this panel only).
    batch_size
        Minibatch size for Cell2location (``None``: all spots at once, as recommended).
    num_samples
        Posterior samples (>= 1) drawn to summarise mean, 5% and 95% quantiles.
    lr
        Learning rate of Cell2location's ClippedAdam (``None``: its default, 0.002). A larger
        rate (0.01-0.02) converges in fewer epochs, useful for short CPU runs.
    model_kwargs
        Further hyperparameters of the Cell2location model (e.g. ``A_factors_per_location``,
        the expected number of cell types per spot, default 7; ``B_groups_per_location``).
    {signatures}
    reference_model_path
        Directory of a saved cell2location ``RegressionModel`` (``save_anndata=True``) to reuse.
    save_reference_model
        Directory where the fitted RegressionModel is saved for later reuse.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (see :func:`pybridge._device.resolve_device`).
    backend
        How the package's mapping model is run: ``"pybridge"`` (default: JIT-traced ELBO, one
        fused Adam, no per-step host sync, vectorised posterior draws of ``w_sf``; see
        :mod:`pybridge.tl._cell2location_fast`; same model, guide, optimiser settings and
        summaries) or ``"cell2location"`` (the package's ``train`` and ``sample_posterior``).
        Minibatch training (``batch_size``) always uses the package's loop.
    verbose
        Progress bars (epoch, ELBO, time left) and messages; ``None`` follows
        ``pybridge.settings.verbosity`` (shown at the default, ``"info"``).
    key_added
        Prefix of the keys written.
    random_state
        Seed for Pyro/torch/numpy (``None``: leave the global state alone).

    Returns
    -------
    dict
        The summary stored in ``spatial.uns[key_added]`` (method, params, cell types, genes used,
        signatures, detection_mean, timings, training history).

    Writes ``spatial.obsm[f"{{key_added}}_mean"]``, ``_q05``, ``_q95`` (spots x cell types,
    float64: cells of each type per spot; cell2location's own ``means_cell_abundance_w_sf``,
    ``q05_cell_abundance_w_sf``, ``q95_cell_abundance_w_sf``), ``_proportions``,
    ``spatial.uns[key_added]`` and ``reference.varm[f"{{key_added}}_signatures"]`` (the
    package's ``means_per_cluster_mu_fg``); see :func:`pybridge.tl.deconvolve` for the layout.

    {raises}
    FileNotFoundError
        ``reference_model_path`` is not a saved RegressionModel.

    {warns}
    """
    if reference_genes not in ("all", "shared"):
        raise ValueError(f"reference_genes must be 'all' or 'shared'; got {reference_genes!r}.")
    if backend not in ("pybridge", "cell2location"):
        raise ValueError(f"backend must be 'pybridge' or 'cell2location'; got {backend!r}.")
    max_epochs = check_epochs("max_epochs", max_epochs, allow_none=False)
    reference_max_epochs = check_epochs("reference_max_epochs", reference_max_epochs, allow_none=False)
    num_samples = check_number("num_samples", num_samples, integer=True, minimum=1)
    batch_size = check_number("batch_size", batch_size, integer=True, minimum=1, allow_none=True)
    detection_alpha = check_number("detection_alpha", detection_alpha, minimum=0, exclusive_minimum=True)
    n_cells_per_location = check_number("n_cells_per_location", n_cells_per_location, minimum=0,
                                        exclusive_minimum=True)
    lr = check_number("lr", lr, minimum=0, exclusive_minimum=True, allow_none=True)
    verbose = is_verbose(verbose)
    dev = resolve_device(device, backend="torch")
    if spatial_batch_key is not None:
        check_obs_key(spatial, spatial_batch_key, what="spatial_batch_key")
    covs = list(categorical_covariate_keys or [])
    extra_keys = ([("batch_key", batch_key)] if batch_key is not None else []) + \
        [("categorical_covariate_keys entry", k) for k in covs]
    inp = check_inputs(spatial, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                       signatures=signatures, key_added=key_added, n_cells_per_location=n_cells_per_location,
                       reference_model_path=reference_model_path, extra_obs_keys=extra_keys)
    if random_state is not None:
        import pyro

        pyro.set_rng_seed(int(random_state))
    tkw = _train_kwargs(dev)
    history, extra = {}, {}
    t_ref = time.perf_counter()
    with quiet(verbose):
        if inp.source == "reference":
            import anndata as ad

            kept = filter_reference_genes(inp.x_ref, inp.ref_genes)
            extra["n_reference_genes_after_filter"] = len(kept)
            # enough of the kept genes must be measured in the spatial data
            in_spatial = shared_genes(spatial.var_names.astype(str), kept, min_shared=MIN_SHARED_GENES,
                                      what=f"spatial data and reference (after cell2location's gene filter kept "
                                           f"{len(kept)} of {len(inp.ref_genes)} reference genes)")
            # "all": the tutorial's way (signatures reusable on any panel); "shared": only the
            # genes this spatial data measures (faster by the ratio of gene counts)
            fit_genes = kept if reference_genes == "all" else in_spatial
            obs = pd.DataFrame({labels_key: inp.labels.to_numpy()}, index=pd.Index(inp.ref_obs_names))
            obs[labels_key] = obs[labels_key].astype(pd.CategoricalDtype(inp.labels.cat.categories))
            for k in [batch_key, *covs]:
                if k is not None:
                    obs[k] = reference.obs[k].astype(str).to_numpy()[inp.keep]
            ref_ad = ad.AnnData(X=inp.x_ref[:, inp.ref_genes.get_indexer(fit_genes)], obs=obs,
                                var=pd.DataFrame(index=pd.Index(fit_genes)))
            sig, h = regression_signatures(ref_ad, labels_key=labels_key, batch_key=batch_key,
                                           categorical_covariate_keys=covs or None, max_epochs=reference_max_epochs,
                                           num_samples=num_samples, tkw=tkw, verbose=verbose,
                                           save_path=save_reference_model)
            history.update({f"reference_{k}": v for k, v in h.items()})
        elif inp.source == "reference_model":
            sig = load_reference_signatures(reference_model_path, num_samples=num_samples, tkw=tkw)
        else:
            sig = inp.signatures
        t_ref = time.perf_counter() - t_ref
        genes, sig_used, x_sp = spots_on_genes(spatial, inp.x_spatial, sig)
        t_map = time.perf_counter()
        ab, cell_types, h, detection, t_parts = map_spots(
            x_sp, spatial.obs_names.astype(str), genes, sig_used, spatial_obs=spatial.obs,
            spatial_batch_key=spatial_batch_key, n_cells_per_location=n_cells_per_location,
            detection_alpha=detection_alpha, max_epochs=max_epochs, batch_size=batch_size, num_samples=num_samples,
            tkw=tkw, verbose=verbose, lr=lr, model_kwargs=model_kwargs, backend=backend, seed=random_state)
        t_map = time.perf_counter() - t_map
    history.update(h)
    params = {
        "method": "cell2location", "labels_key": labels_key, "layer": layer, "reference_layer": reference_layer,
        "batch_key": batch_key, "categorical_covariate_keys": covs, "spatial_batch_key": spatial_batch_key,
        "n_cells_per_location": float(n_cells_per_location), "detection_alpha": float(detection_alpha),
        "reference_max_epochs": reference_max_epochs, "max_epochs": max_epochs, "reference_genes": reference_genes,
        "batch_size": batch_size, "num_samples": num_samples, "lr": lr,
        "model_kwargs": dict(model_kwargs) if model_kwargs else None,
        "reference_model_path": None if reference_model_path is None else str(reference_model_path),
        "device": dev, "random_state": random_state,
        "backend": backend if batch_size is None else "cell2location",
    }
    return write_results(spatial, reference, inp, method="cell2location", key_added=key_added, abundances=ab,
                         cell_types=cell_types, genes=genes, signatures=sig, params=params, history=history,
                         seconds={"reference": t_ref, "mapping": t_map, **t_parts},
                         extra={"detection_mean": detection, **extra}, verbose=verbose)


cell2location.__doc__ = cell2location.__doc__.format(spatial=DOC_SPATIAL, reference=DOC_REFERENCE,
                                                     signatures=DOC_SIGNATURES, raises=DOC_RAISES,
                                                     warns=DOC_WARNS)
