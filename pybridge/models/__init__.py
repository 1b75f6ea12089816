"""Models pybridge trains itself (module/model split as in scvi-tools).

- :class:`TOSICA`: gene-set-token transformer for cell-type annotation (the model:
  data handling, training, prediction, save/load); its torch network is
  :class:`pybridge.models._tosica_module.TOSICAModule`.

Imported lazily so ``import pybridge.models`` does not import torch.
"""

from importlib import import_module

_CLASSES = {"TOSICA": "._tosica", "TOSICAPrediction": "._tosica"}
__all__ = sorted(_CLASSES)


def __getattr__(name):
    if name in _CLASSES:
        return getattr(import_module(_CLASSES[name], __name__), name)
    raise AttributeError(f"module 'pybridge.models' has no attribute {name!r}")


def __dir__():
    return __all__
