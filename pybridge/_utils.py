"""Input checks shared by every job: clear errors that name what is wrong and how to fix it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger("pybridge")


def check_obs_key(adata, key: str, *, what: str = "column") -> None:
    """Raise ``KeyError`` naming ``key`` and the columns that exist when ``key`` is not in ``obs``."""
    if key is None or key not in adata.obs.columns:
        cols = ", ".join(map(str, adata.obs.columns)) or "(none)"
        raise KeyError(f"{what} {key!r} is not in obs (the cell metadata). Columns that exist: {cols}.")


def check_obs_level(adata, key: str, level, *, what: str = "level") -> None:
    """Raise ``ValueError`` when ``level`` is not a value of ``obs[key]``, listing the values."""
    values = adata.obs[key].astype("object")
    present = sorted(map(str, values.dropna().unique()))
    if str(level) not in present:
        raise ValueError(f"{what} {level!r} is not a value of obs[{key!r}]. Values that exist: {', '.join(present)}.")


def get_matrix(adata, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with an error listing the layers that exist."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass layer= naming the layer that holds counts.")
        return adata.X
    if layer not in adata.layers:
        have = ", ".join(adata.layers.keys()) or "(none)"
        raise KeyError(f"layer {layer!r} is not in adata.layers. Layers that exist: {have}.")
    return adata.layers[layer]


def _values(x) -> np.ndarray:
    if sp.issparse(x):
        return np.asarray(x.data)
    return np.asarray(x).ravel()


def check_counts(x, *, name: str = "X", hint: str | None = None, sample: int = 2_000_000) -> None:
    """Check that ``x`` holds raw counts: finite, non-negative integers.

    Raises
    ------
    ValueError
        Naming ``name`` and saying what was found (negative, NaN, non-integer values) and where
        counts usually live (``hint``).
    """
    v = _values(x)
    if v.size > sample:  # a strided sample keeps the check O(sample) on huge matrices
        v = v[:: max(1, v.size // sample)]
    fix = hint or "pass the raw counts (Seurat: the 'counts' layer/slot; AnnData: layer='counts' or X)"
    if v.size == 0:
        return
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values; counts are needed: {fix}.")
    if np.any(v < 0):
        raise ValueError(f"{name} contains negative values (min {v.min():g}); counts are needed: {fix}.")
    frac = np.abs(v - np.round(v))
    if np.any(frac > 1e-6):
        raise ValueError(
            f"{name} contains non-integer values (e.g. {v[frac > 1e-6][0]:g}), so it looks log-normalised; "
            f"counts are needed: {fix}."
        )


def shared_genes(query_genes: Iterable[str], ref_genes: Sequence[str], *, min_shared: int,
                 what: str = "query and reference") -> list[str]:
    """Genes present in both, in reference order; error when fewer than ``min_shared``."""
    q = set(map(str, query_genes))
    shared = [g for g in map(str, ref_genes) if g in q]
    if len(shared) < min_shared:
        qn, rn = len(q), len(ref_genes)
        ex_q = ", ".join(list(map(str, query_genes))[:3])
        ex_r = ", ".join(list(map(str, ref_genes))[:3])
        raise ValueError(
            f"{what} share only {len(shared)} genes (query has {qn}, reference has {rn}; "
            f"at least {min_shared} are needed). Check that both use the same identifiers "
            f"(gene symbols vs Ensembl ids: query starts {ex_q}; reference starts {ex_r})."
        )
    logger.info("%s share %d genes", what, len(shared))
    return shared
