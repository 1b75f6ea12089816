"""Preprocessing (scanpy-style ``pp``) written once against an array module (numpy or cupy)."""

from importlib import import_module

_FUNCS = {
    "normalize_total": "._preprocess",
    "log1p": "._preprocess",
    "highly_variable_genes": "._preprocess",
    "scale": "._preprocess",
    "pca": "._preprocess",
    "run_chain": "._preprocess",
}
__all__ = sorted(_FUNCS)


def __getattr__(name):
    if name in _FUNCS:
        return getattr(import_module(_FUNCS[name], __name__), name)
    raise AttributeError(f"module 'pybridge.pp' has no attribute {name!r}")


def __dir__():
    return __all__
