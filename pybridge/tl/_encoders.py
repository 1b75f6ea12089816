"""Encoder adapters: one interface over the models that turn cells into embeddings.

In-silico deletion (:func:`pybridge.tl.insilico_deletion`) needs
to re-encode the same cells many times with one gene set to zero. Every supported model is
wrapped in an :class:`Encoder` with

- ``genes``: the model's genes, in the order its input expects;
- ``bind(adata)``: fix the cells (counts over ``genes``, plus the obs the model needs, e.g.
  the batch column of an scVI model);
- ``embed(x, rows)``: embeddings (``n x d``, float64) of the bound cells ``rows`` when their
  counts are replaced by ``x`` (dense ``n x len(genes)``).

Supported models:

- a pybridge / scvi-tools scVI (or scANVI) model directory, as written by
  :func:`pybridge.tl.integrate_scvi` (``save_path=``) or ``model.save(dir)``
  (:class:`ScviEncoder`, embedding = mean of the posterior q(z|x), as
  ``get_latent_representation``);
- a loaded scvi-tools model object;
- the pybridge annotation transformer (``pybridge.models.TOSICA``: ``.genes``,
  ``.embed(adata)``, ``TOSICA.load(dir)``), or any object with ``.genes`` and
  ``.embed(adata) -> ndarray`` (:class:`AnnDataEncoder`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import quiet
from .._device import lightning_kwargs, resolve_device


def _quiet_scvi():
    """Hide scvi-tools' INFO chatter (e.g. 'File model.pt already downloaded') while loading."""
    return quiet(False)


class Encoder:
    """Interface of an encoder adapter (see the module docstring)."""

    genes: list[str]
    kind: str = "encoder"

    def bind(self, adata) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def embed(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "n_genes": len(self.genes)}


class ScviEncoder(Encoder):
    """scvi-tools model (SCVI, SCANVI, ...): embedding = posterior mean of z.

    Parameters
    ----------
    model
        A directory written by ``model.save(dir)`` (pybridge's ``integrate_scvi(save_path=)``
        writes one), or a loaded scvi-tools model.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (resolved by :mod:`pybridge._device`).
    batch_size
        Cells per forward pass.
    """

    kind = "scvi"

    def __init__(self, model, *, device: str = "auto", batch_size: int = 4096):
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self._model = None
        self._dir = None
        if isinstance(model, (str, os.PathLike)):
            self._dir = Path(model)
            registry = _scvi_registry(self._dir)
            if registry is None:
                raise ValueError(f"{self._dir} is not a saved scvi-tools model (no readable model.pt).")
            self.model_name = registry.get("model_name", "SCVI")
            self.setup_args = dict(registry.get("setup_args", {}) or {})
            self.genes = _scvi_var_names(self._dir)
        else:
            self._model = model
            self.model_name = type(model).__name__
            self.setup_args = dict(model.adata_manager.registry.get("setup_args", {}) or {})
            self.genes = list(map(str, model.adata.var_names))
        self._fields: dict = {}

    def _info(self) -> dict:
        """pybridge's ``pybridge_scvi.json`` beside ``model.pt`` (written by integrate_scvi), if any."""
        if self._dir is None:
            return {}
        f = self._dir / "pybridge_scvi.json"
        if not f.exists():
            return {}
        import json

        try:
            return json.loads(f.read_text())
        except (OSError, ValueError):
            return {}

    def describe(self) -> dict:
        return {"kind": self.kind, "model": self.model_name, "n_genes": len(self.genes),
                "path": None if self._dir is None else str(self._dir)}

    def bind(self, adata) -> None:
        import scvi
        from scvi import REGISTRY_KEYS

        adata = adata.copy()
        layer = self.setup_args.get("layer")
        if layer is not None:
            adata.layers[layer] = adata.X
        # obs columns the model was set up with (batch, labels, covariates) must exist
        info = self._info()
        bkey = self.setup_args.get("batch_key")
        batches = [str(b) for b in (info.get("batches") or [])]
        if bkey is not None and bkey not in adata.obs.columns and len(batches) == 1:
            # a model trained on one batch: every cell belongs to it
            adata.obs[bkey] = pd.Categorical([batches[0]] * adata.n_obs)
        needed = [bkey] + ([self.setup_args.get("labels_key")] if self.model_name == "SCANVI" else [])
        needed += list(self.setup_args.get("categorical_covariate_keys") or [])
        needed += list(self.setup_args.get("continuous_covariate_keys") or [])
        missing = [k for k in needed if k is not None and k not in adata.obs.columns]
        if missing and self.model_name == "SCANVI" and missing == [self.setup_args.get("labels_key")]:
            missing = []
        if missing:
            have = ", ".join(map(str, adata.obs.columns)) or "(none)"
            raise KeyError(
                f"the scVI model was set up with obs column(s) {', '.join(missing)}, which the data lack. "
                f"Columns that exist: {have}. Add them (same categories as at training) before scoring."
            )
        for k in [bkey] + list(self.setup_args.get("categorical_covariate_keys") or []):
            if k is not None:
                adata.obs[k] = pd.Categorical(adata.obs[k].astype(str).to_numpy())
        if bkey is not None and batches:
            unknown = sorted(set(adata.obs[bkey].astype(str)) - set(batches))
            if unknown:
                raise ValueError(
                    f"batch values {', '.join(unknown[:5])} of obs[{bkey!r}] were not seen when the model was "
                    f"trained (it knows {', '.join(batches[:10])}); in-silico deletion re-encodes cells of "
                    "known batches only."
                )
        labels_key = self.setup_args.get("labels_key")
        if labels_key is not None and self.model_name == "SCANVI":
            # query cells may carry labels unknown to the model: scANVI treats them as unlabelled
            unl = self.setup_args.get("unlabeled_category", "Unknown")
            adata.obs[labels_key] = unl
        if self._dir is not None:
            cls = getattr(scvi.model, self.model_name, scvi.model.SCVI)
            kw = lightning_kwargs(self.device)
            dev = kw["devices"][0] if isinstance(kw["devices"], list) else "auto"
            with _quiet_scvi():
                self._model = cls.load(str(self._dir), adata=adata, accelerator=kw["accelerator"], device=dev)
            model = self._model
        else:
            model = self._model
            if self.device != "cpu":
                model.to_device(self.device)
            model._validate_anndata(adata)  # registers this AnnData with the model's setup
        manager = model.get_anndata_manager(adata, required=True)
        fields = {}
        for key in (REGISTRY_KEYS.BATCH_KEY, REGISTRY_KEYS.CAT_COVS_KEY, REGISTRY_KEYS.CONT_COVS_KEY,
                    REGISTRY_KEYS.LABELS_KEY):
            if key in manager.data_registry:
                v = manager.get_from_registry(key)
                v = v.to_numpy() if isinstance(v, pd.DataFrame) else np.asarray(v)
                fields[key] = v.astype(np.float32 if key == REGISTRY_KEYS.CONT_COVS_KEY else np.int64)
        if REGISTRY_KEYS.BATCH_KEY not in fields:
            fields[REGISTRY_KEYS.BATCH_KEY] = np.zeros((adata.n_obs, 1), dtype=np.int64)
        self._fields = fields
        self._model = model

    def embed(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        import torch
        from scvi import REGISTRY_KEYS

        if self._model is None or not self._fields:
            raise RuntimeError("call bind(adata) before embed().")
        rows = np.asarray(rows)
        x = np.asarray(x, dtype=np.float32)

        def batches():
            for s in range(0, x.shape[0], self.batch_size):
                sl = slice(s, s + self.batch_size)
                t = {REGISTRY_KEYS.X_KEY: torch.from_numpy(np.ascontiguousarray(x[sl]))}
                for k, v in self._fields.items():
                    t[k] = torch.from_numpy(np.ascontiguousarray(v[rows[sl]]))
                yield t

        with torch.inference_mode():
            z = self._model.get_latent_representation(dataloader=batches())
        return np.asarray(z, dtype=np.float64)


class AnnDataEncoder(Encoder):
    """Any model with ``.genes`` and ``.embed(adata) -> ndarray`` (e.g. pybridge's TOSICA).

    The model receives an AnnData of counts (cells x ``genes``, CSR float32) with the bound
    cells' obs; it does its own normalisation.
    """

    kind = "anndata"

    def __init__(self, model, *, name: str | None = None):
        if not (hasattr(model, "embed") and hasattr(model, "genes")):
            raise TypeError("an encoder object needs .genes and .embed(adata) -> ndarray.")
        self.model = model
        self.kind = name or type(model).__name__
        self.genes = list(map(str, model.genes))
        self._obs = None

    def bind(self, adata) -> None:
        self._obs = adata.obs.copy()

    def embed(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        import anndata as ad

        obs = self._obs.iloc[np.asarray(rows)].copy()
        obs.index = [f"c{i}" for i in range(obs.shape[0])]  # rows may repeat (stacked deletions)
        a = ad.AnnData(X=sp.csr_matrix(np.asarray(x, dtype=np.float32)), obs=obs,
                       var=pd.DataFrame(index=pd.Index(self.genes)))
        z = self.model.embed(a)
        z = z.detach().cpu().numpy() if hasattr(z, "detach") else np.asarray(z)
        if z.shape[0] != a.n_obs:
            raise ValueError(f"{self.kind}.embed returned {z.shape[0]} rows for {a.n_obs} cells.")
        return z.astype(np.float64)


def _scvi_registry(path: Path) -> dict | None:
    if not (path / "model.pt").exists() and not any(path.glob("*model.pt")):
        return None
    try:
        import scvi

        with _quiet_scvi():
            return scvi.model.base.BaseModelClass.load_registry(str(path))
    except Exception:  # noqa: BLE001 - not an scvi-tools directory
        return None


def _scvi_var_names(path: Path) -> list[str]:
    import torch

    f = path / "model.pt"
    if not f.exists():
        f = next(path.glob("*model.pt"))
    saved = torch.load(f, map_location="cpu", weights_only=False)
    return list(map(str, saved["var_names"]))


def _tosica_class():
    try:
        from ..models._tosica import TOSICA  # built by the annotation work; optional here
    except Exception:  # noqa: BLE001 - not available in this checkout
        return None
    return TOSICA


def load_encoder(model, *, device: str = "auto", batch_size: int = 4096) -> Encoder:
    """Wrap ``model`` in an :class:`Encoder`.

    Parameters
    ----------
    model
        A saved model directory (scvi-tools ``model.save`` / pybridge ``integrate_scvi``
        ``save_path``; or a pybridge TOSICA directory), a loaded scvi-tools model, an
        :class:`Encoder`, or any object with ``.genes`` and ``.embed(adata)``.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    batch_size
        Cells per forward pass of an scvi-tools encoder.

    Raises
    ------
    FileNotFoundError
        If a directory is given that does not exist.
    ValueError
        If the directory holds no model pybridge can load.
    """
    if isinstance(model, Encoder):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_dir():
            raise FileNotFoundError(f"model={str(path)!r}: no such directory.")
        if _scvi_registry(path) is not None:
            return ScviEncoder(path, device=device, batch_size=batch_size)
        tosica = _tosica_class()
        if tosica is not None and (path / "tosica.json").exists():
            return AnnDataEncoder(tosica.load(str(path), device=device), name="TOSICA")
        have = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "(empty)"
        raise ValueError(
            f"{str(path)!r} holds nothing pybridge can use as an encoder (found: {have}). Give a directory "
            "saved by pybridge.tl.integrate_scvi(save_path=...) / scvi-tools model.save(), or a pybridge "
            "TOSICA model directory."
        )
    try:
        from scvi.model.base import BaseModelClass
    except Exception:  # noqa: BLE001
        BaseModelClass = ()  # type: ignore[assignment]
    if BaseModelClass and isinstance(model, BaseModelClass):
        return ScviEncoder(model, device=device, batch_size=batch_size)
    if hasattr(model, "embed") and hasattr(model, "genes"):
        return AnnDataEncoder(model)
    raise TypeError(
        f"cannot use a {type(model).__name__} as an encoder: give a saved model directory, an scvi-tools "
        "model, or an object with .genes and .embed(adata)."
    )
