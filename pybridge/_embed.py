"""Glue for Python embedded in R (reticulate).

R links its own BLAS (Debian's default is the unoptimised reference BLAS) and exports its
symbols process-wide. A torch wheel imported afterwards binds its ``sgemm_``-style calls to
that library instead of its own MKL, which makes every linear layer ~10x slower (measured:
300 forward/backward steps of a 128 x 2000 x 128 layer take 6.3 s instead of 0.5 s, and
scVI training from ``RunSCVI`` took 3.5x as long as the same training in Python). Loading
torch with ``RTLD_DEEPBIND`` makes torch's libraries resolve their own symbols first. R
calls :func:`preload_torch` once, before anything imports torch.
"""

from __future__ import annotations

import os
import sys


def preload_torch() -> str:
    """Import torch with ``RTLD_DEEPBIND`` so it uses its own BLAS, not the host's.

    Returns
    -------
    str
        ``"deepbind"`` when torch was imported here, ``"already-imported"`` when torch was
        imported before (nothing can be changed then), ``"unsupported"`` where the platform has
        no ``RTLD_DEEPBIND`` (macOS, Windows: their loaders do not interpose this way), or
        ``"not-installed"``.
    """
    if "torch" in sys.modules:
        return "already-imported"
    if not hasattr(os, "RTLD_DEEPBIND"):
        return "unsupported"
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        import torch  # noqa: F401
    except ImportError:
        return "not-installed"
    finally:
        sys.setdlopenflags(flags)
    return "deepbind"
