"""Values stored in ``adata.uns`` (and in R's ``Misc``): one cleaning rule for every job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

_SCALARS = (bool, int, float, str)


def clean_uns(value):
    """An h5ad- and R-storable copy of a job's parameters / summary.

    - ``None`` values are dropped (from dicts and lists): h5ad cannot store them;
    - NumPy scalars become Python scalars, paths and other objects their ``str``;
    - tuples become lists; a list of scalars stays a list, a list that mixes types becomes a list
      of ``str`` (h5ad stores homogeneous arrays);
    - dicts are cleaned recursively (keys become ``str``); NumPy arrays and DataFrames are kept.
    """
    if isinstance(value, dict):
        return {str(k): clean_uns(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        items = [clean_uns(v) for v in value if v is not None]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return items
        if all(isinstance(v, bool) for v in items) or all(isinstance(v, str) for v in items):
            return items
        if all(isinstance(v, _SCALARS) for v in items):
            return [str(v) for v in items]
        return items
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, pd.DataFrame, pd.Series) + _SCALARS):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)
