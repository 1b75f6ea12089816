"""The one entry point the R package calls jobs through (``.engine_call()`` in R).

:func:`call` runs ``pybridge.<module>.<fun>(**kwargs)`` at the verbosity R asked for and hands
back the warnings pybridge raised during the call, so that R can re-issue them as R warnings.
Warnings from other libraries keep going to stderr as usual. Exceptions propagate unchanged:
the R side turns them into R errors (and keeps the traceback for ``reticulate::py_last_error()``).
"""

from __future__ import annotations

import importlib
import logging
import re
import warnings
from pathlib import Path

from ._logging import logger, settings

_PKG = str(Path(__file__).resolve().parents[1])


def rename(msg: str, names: dict | None) -> str:
    """Python argument names in ``msg`` -> the caller's (``{"n_top_genes": "nfeatures"}``), whole
    words only, longest first (R's ``.r_names()`` applies the same rule to errors and warnings)."""
    for py in sorted(names or {}, key=len, reverse=True):
        msg = re.sub(rf"(?<![A-Za-z0-9_.]){re.escape(py)}(?![A-Za-z0-9_])", str(names[py]), msg)
    return msg


class _Rename(logging.Filter):
    """Notes logged during an R call name R's arguments, as its errors do."""

    def __init__(self, names: dict):
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = rename(record.getMessage(), self.names), ()
        return True


def call(module: str | None, fun: str, kwargs: dict, verbosity: int = 2, names: dict | None = None):
    """Run ``pybridge.<module>.<fun>(**kwargs)``; return ``(result, [pybridge warning messages])``.

    Parameters
    ----------
    module
        Submodule (``"tl"``, ``"pp"``, ``"io"``, ...) or ``None`` for the package itself.
    fun
        Function name in that module.
    kwargs
        Keyword arguments (Python names).
    verbosity
        ``pybridge.settings.verbosity`` for the duration of the call (R: 2 when ``verbose``,
        else 1).
    names
        Python argument name -> the caller's, applied to the notes pybridge logs during the call.
    """
    mod = importlib.import_module("pybridge" + (f".{module}" if module else ""))
    f = getattr(mod, fun)
    show = warnings.showwarning
    ours: list[str] = []
    filt = _Rename(dict(names)) if names else None
    if filt:
        logger.addFilter(filt)
    try:
        with settings.override(int(verbosity)), warnings.catch_warnings(record=True) as caught:
            # pybridge's own warnings every time (R users expect one per call); others as configured
            warnings.filterwarnings("always", module=r"pybridge(\.|$)")
            out = f(**dict(kwargs))
    finally:
        if filt:
            logger.removeFilter(filt)
    for w in caught:
        if str(w.filename).startswith(_PKG):
            ours.append(str(w.message))
        elif int(verbosity) >= 1:
            show(w.message, w.category, w.filename, w.lineno)
    return out, list(dict.fromkeys(ours))
