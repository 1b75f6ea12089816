"""pybridge: GPU single-cell models for Seurat and AnnData users.

Submodules follow scanpy's layout:

- :mod:`pybridge.io` — the Seurat <-> AnnData bridge (in memory and files).
- :mod:`pybridge.pp` — preprocessing written once for numpy and cupy.
- :mod:`pybridge.tl` — jobs: scVI integration, annotation transfer, deconvolution,
  perturbation scoring.
- :mod:`pybridge.datasets` — the small real datasets embedded in the package.
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["io", "pp", "tl", "datasets", "__version__"]


def __getattr__(name):  # lazy submodules: `import pybridge` stays cheap (no torch import)
    if name in ("io", "pp", "tl", "datasets", "cli"):
        return import_module(f"pybridge.{name}")
    raise AttributeError(f"module 'pybridge' has no attribute {name!r}")
