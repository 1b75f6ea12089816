"""pybridge: GPU single-cell models for Seurat and AnnData users.

Submodules follow scanpy's layout:

- :mod:`pybridge.io` — the Seurat <-> AnnData bridge (in memory and files).
- :mod:`pybridge.pp` — preprocessing written once for numpy and cupy.
- :mod:`pybridge.tl` — jobs: scVI integration, annotation transfer, deconvolution,
  perturbation scoring.
- :mod:`pybridge.pl` — plots of the jobs' results (matplotlib / scanpy).
- :mod:`pybridge.models` — models pybridge trains itself (TOSICA).
- :mod:`pybridge.datasets` — the small real datasets embedded in the package.
- :data:`pybridge.settings` — ``settings.verbosity`` (0 error ... 2 info, the default, 3 debug).
"""

from importlib import import_module

__version__ = "0.1.0"
_SUBMODULES = ("io", "pp", "tl", "pl", "models", "datasets")
__all__ = [*_SUBMODULES, "settings", "__version__"]


def __getattr__(name):  # lazy submodules: `import pybridge` stays cheap (no torch import)
    if name in _SUBMODULES or name == "cli":
        return import_module(f"pybridge.{name}")
    if name == "settings":
        from ._core import settings

        return settings
    raise AttributeError(f"module 'pybridge' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
