"""Input checks shared by every job: clear errors that name what is wrong and how to fix it.

Errors name the Python argument; the R package rewrites argument names into R's
(``reference_layer`` -> ``reference.layer``) when it passes them on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ._logging import logger


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
    query_genes = list(map(str, query_genes))  # may be an iterator: read it once
    ref_genes = list(map(str, ref_genes))
    q = set(query_genes)
    shared = [g for g in ref_genes if g in q]
    if len(shared) < min_shared:
        qn, rn = len(q), len(ref_genes)
        ex_q = ", ".join(query_genes[:3]) or "(no genes)"
        ex_r = ", ".join(ref_genes[:3]) or "(no genes)"
        raise ValueError(
            f"{what} share only {len(shared)} genes (query has {qn}, reference has {rn}; "
            f"at least {min_shared} are needed). Check that both use the same identifiers "
            f"(gene symbols vs Ensembl ids: query starts {ex_q}; reference starts {ex_r})."
        )
    logger.info("%s share %d genes", what, len(shared))
    return shared


def check_number(name: str, value, *, integer: bool = False, minimum: float | None = None,
                 maximum: float | None = None, allow_none: bool = False, exclusive_minimum: bool = False):
    """Check a numeric argument before any work starts; return it as ``int``/``float``.

    Parameters
    ----------
    name
        The argument's (Python) name, used in the message.
    value
        The value given.
    integer
        Whether a whole number is required (``3.0`` is accepted as ``3``).
    minimum, maximum
        Inclusive bounds (``minimum`` exclusive with ``exclusive_minimum``); ``None``: unbounded.
    allow_none
        Whether ``None`` (meaning "the method's default") is accepted; it is returned unchanged.

    Raises
    ------
    TypeError
        When ``value`` is not a number (booleans are not numbers here).
    ValueError
        When it is NaN, not whole although ``integer``, or out of bounds.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if integer:
        if v != round(v):
            raise ValueError(f"{name} must be a whole number, got {value!r}.")
        v = int(round(v))
    if minimum is not None and (v <= minimum if exclusive_minimum else v < minimum):
        rel = "greater than" if exclusive_minimum else "at least"
        raise ValueError(f"{name} must be {rel} {minimum:g}, got {value!r}.")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, got {value!r}.")
    return v


def check_epochs(name: str, value, *, allow_none: bool = True, allow_zero: bool = False):
    """Check an epoch count: a whole number >= 1 (>= 0 where 0 is documented, e.g. "no
    training"); ``None`` (the method's own default) when ``allow_none``.

    Raises
    ------
    TypeError, ValueError
        As :func:`check_number`, e.g. ``max_epochs must be at least 1, got -1.``
    """
    return check_number(name, value, integer=True, minimum=0 if allow_zero else 1, allow_none=allow_none)


def clamp_n_top(name: str, value: int, n_available: int, *, what: str = "genes") -> int:
    """``min(value, n_available)`` for "how many of the top genes" arguments, with an info note when
    it clamps (Seurat's ``FindVariableFeatures`` likewise takes all genes when asked for more).

    Raises
    ------
    TypeError, ValueError
        When ``value`` is not a whole number >= 1, or there is nothing to choose from.
    """
    value = check_number(name, value, integer=True, minimum=1)
    if n_available < 1:
        raise ValueError(f"{name}: there are no {what} to choose from.")
    if value > n_available:
        logger.info("%s=%d is more than the %d %s there are: using all %d", name, value, n_available, what,
                    n_available)
        return int(n_available)
    return int(value)
