"""Lazy attribute maps for the public subpackages (``pp``, ``tl``, ``models``): a function is
imported from its module on first use, so ``import pybridge.tl`` does not import torch."""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package`` whose attribute ``name`` lives in the
    module ``names[name]`` (relative to ``package``, or absolute)."""

    def __getattr__(name):
        if name in names:
            return getattr(import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__, sorted(names)
