"""Models pybridge trains itself (module/model split as in scvi-tools).

- :class:`TOSICA`: gene-set-token transformer for cell-type annotation (the model:
  data handling, training, prediction, save/load); its torch network is
  :class:`pybridge.models._tosica_module.TOSICAModule`.

Imported lazily so ``import pybridge.models`` does not import torch.
"""

from .._lazy import lazy_exports

_CLASSES = {"TOSICA": "._tosica", "TOSICAPrediction": "._tosica"}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _CLASSES)
