"""Saving and loading :class:`pybridge.models.TOSICA` (a directory: ``tosica.json`` +
``tosica_weights.pt``, each written atomically)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._core import logger
from ..io._atomic import atomic_path
from ._novelty import ReferenceProfiles

WEIGHTS = "tosica_weights.pt"
CONFIG = "tosica.json"
FORMAT = 2
# settings of format-1 models (saved before these options existed): behave as they did
_FORMAT1 = dict(input_scaling="reference", linear_C=None, unknown_quantile=0.05)


def save(model, path: Path, *, overwrite: bool = False) -> Path:
    import torch

    if (path / CONFIG).exists() and not overwrite:
        raise FileExistsError(f"{path} already holds a TOSICA model; pass overwrite=True to replace it.")
    path.mkdir(parents=True, exist_ok=True)
    prof = model.profiles.to_dict()
    centroids = prof.pop("centroids")
    meta = dict(
        format=FORMAT, config=model.config, genes=model.genes, classes=model.classes,
        labels_key=model.labels_key, reference=model.reference, token_names=model.token_names,
        token_genes=model.token_genes, fallback=model.fallback, gene_set_source=model.gene_set_source,
        history=model.history, train_info=model.train_info, profiles=prof,
    )
    state = {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
    state["_profiles_centroids"] = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
    with atomic_path(path / WEIGHTS, overwrite=True) as tmp:
        torch.save(state, tmp)
    with atomic_path(path / CONFIG, overwrite=True) as tmp:
        tmp.write_text(json.dumps(meta))
    logger.info("saved TOSICA model to %s", path)
    return path


def read_meta(path: Path) -> dict:
    """The ``tosica.json`` of a saved model (what it was trained on), without loading weights."""
    if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
        raise FileNotFoundError(f"{path} is not a saved TOSICA model (needs {CONFIG} and {WEIGHTS}).")
    meta = json.loads((path / CONFIG).read_text())
    if meta.get("format", 0) > FORMAT:
        raise ValueError(f"{path} was written by a newer pybridge (format {meta['format']}).")
    return meta


def load(cls, path: Path):
    import torch

    meta = read_meta(path)
    config = dict(meta["config"]) if meta.get("format", 1) >= 2 else {**_FORMAT1, **meta["config"]}
    self = cls(gene_sets=None, **config)
    self.genes, self.classes = meta["genes"], meta["classes"]
    self.labels_key, self.reference = meta.get("labels_key"), meta.get("reference", {})
    self.token_names, self.token_genes = meta["token_names"], meta["token_genes"]
    self.fallback, self.gene_set_source = meta["fallback"], meta.get("gene_set_source", "")
    self.history, self.train_info = meta.get("history", []), meta.get("train_info", {})
    self.module = self._make_module()
    state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    centroids = state.pop("_profiles_centroids", None)
    self.module.load_state_dict(state)
    self.module.eval()
    if meta.get("profiles") is not None and centroids is not None:
        self.profiles = ReferenceProfiles.from_dict({**meta["profiles"], "centroids": centroids.numpy()})
    return self
