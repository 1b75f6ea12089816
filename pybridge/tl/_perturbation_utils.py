"""Helpers shared by the perturbation methods (:mod:`._augur`, :mod:`._mixscape`,
:mod:`._insilico`) and their dispatcher :func:`pybridge.tl.score_perturbation`: condition labels,
the levels to score, cell-type labels, the device check of the CPU-only methods, and the
log-normalisation of counts (pybridge.pp's)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._core import check_counts, check_obs_key, check_obs_level, get_matrix


def condition_labels(adata, key: str) -> np.ndarray:
    """``obs[key]`` as an object array of ``str``; missing values become ``"nan"`` (never scored)."""
    check_obs_key(adata, key, what="condition_key")
    cond = adata.obs[key].astype("object").astype(str).to_numpy()
    cond[adata.obs[key].isna().to_numpy()] = "nan"
    return cond


def levels(cond: np.ndarray) -> list[str]:
    return sorted(set(cond.tolist()) - {"nan"})


def one_perturbed(adata, key, cond, control, perturbed) -> str:
    """The one perturbed level compared with ``control`` (Augur, in-silico deletion)."""
    if perturbed is not None and not isinstance(perturbed, str):
        perturbed = list(perturbed)
        if len(perturbed) != 1:
            raise ValueError(f"perturbed must name one level of obs[{key!r}] for this method, got {perturbed}.")
        perturbed = perturbed[0]
    if perturbed is None:
        others = [lv for lv in levels(cond) if lv != control]
        if len(others) != 1:
            raise ValueError(
                f"obs[{key!r}] has {len(others)} levels besides the control {control!r} "
                f"({', '.join(others) or 'none'}); pass perturbed= naming the one to compare with the control."
            )
        return others[0]
    check_obs_level(adata, key, perturbed, what="perturbed")
    if str(perturbed) == control:
        raise ValueError(f"perturbed and control are the same level ({control!r}).")
    return str(perturbed)


def targets(adata, key, cond, control, perturbed) -> list[str]:
    """The targets Mixscape classifies: ``perturbed`` (checked) or every level but ``control``."""
    if perturbed is None:
        t = [lv for lv in levels(cond) if lv != control]
        if not t:
            raise ValueError(f"obs[{key!r}] has no level besides the control {control!r}.")
        return t
    perturbed = [perturbed] if isinstance(perturbed, str) else list(perturbed)
    for p in perturbed:
        check_obs_level(adata, key, p, what="target")
    return [str(p) for p in perturbed if str(p) != control]


def cell_types(adata, key) -> np.ndarray:
    """``obs[key]`` as ``str`` (missing: ``"nan"``, never scored); ``"all"`` for every cell when
    ``key`` is ``None``."""
    if key is None:
        return np.full(adata.n_obs, "all", dtype=object)
    check_obs_key(adata, key, what="cell_type_key")
    s = adata.obs[key]
    out = s.astype("object").astype(str).to_numpy()
    out[s.isna().to_numpy()] = "nan"
    return out


def check_cpu_device(device) -> str:
    """Augur and Mixscape run on CPU (scikit-learn): check the value without importing torch."""
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ValueError(f"device must be one of 'auto', 'cpu', 'cuda' (or 'cuda:N'), got {device!r}.")
    return "cpu"


def lognorm(x) -> sp.csr_matrix:
    """Counts -> ``log1p(counts / total * 1e4)`` as a new CSR float32 (Seurat's LogNormalize), by
    :func:`pybridge.pp._normalization.log_normalize` (no counts check here: see :func:`lognorm_counts`)."""
    from ..pp._normalization import log_normalize

    return sp.csr_matrix(log_normalize(x, 1e4, dtype=np.float32))


def lognorm_counts(adata, layer, *, method: str) -> sp.csr_matrix:
    """The counts of ``X`` / ``layer``, checked (finite, non-negative integers), log-normalised."""
    x = get_matrix(adata, layer)
    check_counts(x, name="X" if layer is None else f"layer {layer!r}",
                 hint=f"{method} log-normalises raw counts itself: pass layer= naming the counts layer "
                      "(Seurat: the 'counts' slot)")
    return lognorm(x)
