"""Seurat <-> AnnData mapping rules (the bridge), shared by the in-memory path (R through
reticulate) and the file path (Python through rpy2).

R splits a Seurat object into parts (:mod:`pybridge.io._parts`) and calls
:func:`anndata_from_parts`; for the way back it calls :func:`anndata_to_parts` and assembles a
Seurat object from what it gets. The rules:

=====================  ==================================================================
Seurat (v4/v5 assay)   AnnData
=====================  ==================================================================
chosen layer (counts)  ``X`` (cells x genes CSR; the dgCMatrix arrays themselves, no copy)
other layers           ``layers['counts' | 'data' | 'scale.data']``; scale.data is dense and
                       covers only its features (listed in ``uns['pybridge']['scale_data_features']``,
                       other columns 0)
meta.data              ``obs``: factor -> categorical (all levels, order, ordered flag);
                       logical with NA -> nullable boolean; integer NA -> nullable Int32;
                       character NA -> missing string
meta.features          ``var``; VariableFeatures -> ``var['highly_variable']``
reductions             ``obsm['X_<name>']``; loadings -> ``varm['PCs']`` (pca) or
                       ``varm['<name>_loadings']`` (rows of features without loadings are 0);
                       key, stdev, assay in ``uns['pybridge']['reductions'][name]``
graphs                 ``obsp[<name>]`` (e.g. ``RNA_snn``)
misc                   ``uns`` (representable entries; data.frames become DataFrames)
other assays           counts in ``obsm[<assay>]`` (DataFrame, features as columns);
                       ``as.AnnData(object, assay = "<assay>")`` gives the whole assay
Idents                 ``uns['pybridge']['idents']``
v5 split layers        joined into one matrix (cells in the object's order); each cell's
(``counts.A`` ...)     layer name in ``obs['split.layer']`` (R's ``split.key``); the split in
                       ``uns['pybridge']['split']`` = {key, levels, added, layers}
assay class            ``uns['pybridge']['assay_class']`` (``Assay5`` or ``Assay``): R rebuilds it
image coordinates      ``obsm['X_spatial']`` (VisiumV1/V2 spots, FOV centroids; the reduction ``spatial``)
=====================  ==================================================================

What cannot be carried is listed in ``uns['pybridge']['report']`` (and printed by R when
verbose); nothing is dropped silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._parts import (
    _arr,
    _strs,
    column_from_parts,
    dense_from_r,
    df_from_parts,
    df_to_parts,
    matrix_to_parts,
    sparse_from_parts,
)

DF_MARKER = "__pybridge_dataframe__"


def _dict(x) -> dict:
    """reticulate turns an empty R list into a Python list; treat it (and None) as {}."""
    if isinstance(x, dict):
        return x
    return {}


def _matrix_from_part(part, *, transpose: bool = True):
    part = _dict(part)
    if "sparse" in part:
        return sparse_from_parts(part["sparse"], transpose=transpose)
    if "dense" in part:
        return dense_from_r(part["dense"], transpose=transpose)
    raise ValueError("matrix parts need a 'sparse' or 'dense' entry")


def uns_from_r(x):
    """Recursively turn R misc (as reticulate hands it) into uns-ready values."""
    if isinstance(x, dict):
        if DF_MARKER in x:
            p = x[DF_MARKER]
            return df_from_parts(p["index"], p["names"], p["columns"])
        return {str(k): uns_from_r(v) for k, v in x.items()}
    if isinstance(x, list):
        if all(isinstance(v, str) for v in x):
            return np.array(x, dtype=object)
        if all(isinstance(v, (int, float, bool, np.number)) for v in x) and x:
            return np.asarray(x)
        return {str(i): uns_from_r(v) for i, v in enumerate(x)}
    if isinstance(x, np.ndarray):
        return np.array(x)  # own the memory: uns outlives the R call
    return x


def _split_meta(split) -> dict | None:
    """The v5 layer split (R's parts$split) as stored in ``uns['pybridge']['split']``."""
    split = _dict(split)
    if not split.get("key"):
        return None
    return {"key": str(split["key"]), "levels": np.array(_strs(split.get("levels")), dtype=object),
            "added": bool(split.get("added", True)), "layers": np.array(_strs(split.get("layers")), dtype=object)}


def anndata_from_parts(parts: dict):
    """Build an AnnData from the parts of one Seurat assay (called by R's ``as.AnnData``).

    Parameters
    ----------
    parts
        Dict sent by R (see the module docstring for the mapping). Large arrays arrive as
        read-only views of R memory.

    Returns
    -------
    anndata.AnnData
        ``n_obs`` = cells, ``n_vars`` = features of the assay. ``X`` shares memory with the R
        object and is read-only: copy before writing into it (``adata.X = adata.X.copy()``).
    """
    import anndata as ad

    cells = _strs(parts["cells"])
    features = _strs(parts["features"])
    report = list(_strs(parts.get("report")))
    obs = df_from_parts(cells, _dict(parts.get("obs")).get("names"), _dict(parts.get("obs")).get("columns"))
    var = df_from_parts(features, _dict(parts.get("var")).get("names"), _dict(parts.get("var")).get("columns"))
    X = _matrix_from_part(parts["X"]) if parts.get("X") is not None else None
    adata = ad.AnnData(X=X, obs=obs, var=var)
    meta: dict = {"assay": str(parts.get("assay", "RNA")), "X_layer": str(parts.get("X_layer", "counts")),
                  "seurat_version": str(parts.get("seurat_version", "")), "reductions": {}}
    if parts.get("assay_class") is not None:
        meta["assay_class"] = str(parts["assay_class"])
    split = _split_meta(parts.get("split"))
    if split is not None:
        meta["split"] = split

    for name, part in _dict(parts.get("layers")).items():
        m = _matrix_from_part(part)
        if name == "scale.data":
            sfeat = _strs(parts.get("scale_data_features"))
            full = np.zeros((adata.n_obs, adata.n_vars), dtype=np.float64)
            pos = adata.var_names.get_indexer(sfeat)
            full[:, pos] = np.asarray(m.toarray() if sp.issparse(m) else m)
            m = full
            meta["scale_data_features"] = np.array(sfeat, dtype=object)
        adata.layers[name] = m
    if parts.get("original_features") is not None:
        orig = _strs(parts["original_features"])
        if len(orig) == adata.n_vars and orig != features:
            adata.var_names = pd.Index(orig, dtype=object)
            report.append("feature names restored to their names before Seurat replaced '_' by '-'")
    if parts.get("variable_features") is not None:
        vf_list = _strs(parts["variable_features"])
        vf = set(vf_list)
        if vf:
            adata.var["highly_variable"] = np.array([f in vf for f in features])
            meta["variable_features"] = np.array(vf_list, dtype=object)  # Seurat's rank order

    for name, red in _dict(parts.get("reductions")).items():
        emb = np.asarray(red["embeddings"])
        if emb.ndim == 1:
            emb = emb.reshape(-1, 1)
        adata.obsm[f"X_{name}"] = emb
        info = {"key": str(red.get("key", "")), "assay": str(red.get("assay", "")),
                "global": bool(red.get("global", False))}
        if red.get("stdev") is not None and len(_arr(red["stdev"])):
            info["stdev"] = np.array(_arr(red["stdev"], np.float64))
        if red.get("loadings") is not None:
            lf = _strs(red["loadings_features"])
            load = np.asarray(red["loadings"], dtype=np.float64)
            if load.ndim == 1:
                load = load.reshape(-1, 1)
            pos = pd.Index(features).get_indexer(lf)
            if (pos < 0).any():
                report.append(f"reduction {name!r}: loadings of {int((pos < 0).sum())} features not in the assay dropped")
            full = np.zeros((adata.n_vars, load.shape[1]))
            full[pos[pos >= 0]] = load[pos >= 0]
            adata.varm["PCs" if name == "pca" else f"{name}_loadings"] = full
            info["loadings_features"] = np.array(adata.var_names[pos[pos >= 0]], dtype=object)  # final var names
        if name == "pca" and "stdev" in info and "pca" not in _dict(parts.get("misc")):
            adata.uns["pca"] = {"variance": info["stdev"] ** 2}  # scanpy's place for it
            meta["uns_generated"] = np.array(["pca"], dtype=object)
        meta["reductions"][str(name)] = info

    for name, g in _dict(parts.get("graphs")).items():
        adata.obsp[str(name)] = sparse_from_parts(g, transpose=False).tocsr()

    for name, a in _dict(parts.get("other_assays")).items():
        m = _matrix_from_part(a["X"])
        fnames = _strs(a["features"])
        dense = np.asarray(m.toarray() if sp.issparse(m) else m)
        adata.obsm[str(name)] = pd.DataFrame(dense, index=adata.obs_names, columns=pd.Index(fnames, dtype=object))
        meta.setdefault("assays_in_obsm", []).append(str(name))
    if "assays_in_obsm" in meta:
        meta["assays_in_obsm"] = np.array(meta["assays_in_obsm"], dtype=object)

    if parts.get("idents") is not None:
        meta["idents"] = pd.Series(column_from_parts(parts["idents"], adata.n_obs), index=adata.obs_names)
        meta["idents"] = {"codes": meta["idents"].cat.codes.to_numpy(),
                          "levels": np.array(meta["idents"].cat.categories, dtype=object)}
    for k, v in uns_from_r(_dict(parts.get("misc"))).items():
        adata.uns[k] = v
    meta["report"] = np.array(report, dtype=object)
    adata.uns["pybridge"] = meta
    return adata


# ------------------------------------------------------------------------------ to R
def _uns_to_r(x, path: str, report: list):
    if isinstance(x, pd.DataFrame):
        return {DF_MARKER: df_to_parts(x)}
    if isinstance(x, dict) or hasattr(x, "items") and not isinstance(x, (np.ndarray,)):
        return {str(k): _uns_to_r(v, f"{path}/{k}", report) for k, v in x.items()}
    if sp.issparse(x):
        return {"sparse_matrix": matrix_to_parts(x, transpose=False)["sparse"]}
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "biuf":
            return x
        if x.dtype.kind in "OUS":
            return np.array([str(v) for v in x.ravel()], dtype=str).reshape(x.shape)
    if isinstance(x, (str, int, float, bool, np.number, np.bool_)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_uns_to_r(v, f"{path}/{i}", report) for i, v in enumerate(x)]
    report.append(f"uns entry {path!r} ({type(x).__name__}) has no R representation; not carried")
    return None


def _is_counts(m) -> bool:
    v = m.data if sp.issparse(m) else np.asarray(m).ravel()
    v = v[: 1_000_000]
    return bool(v.size == 0 or (np.all(v >= 0) and np.all(np.abs(v - np.round(v)) < 1e-8)))


def anndata_to_parts(adata, *, X_layer: str | None = None) -> dict:
    """Split an AnnData into parts for R's ``as.Seurat`` (the reverse of :func:`anndata_from_parts`).

    Parameters
    ----------
    adata
        The AnnData (unchanged).
    X_layer
        Seurat layer that receives ``X``: ``"counts"`` or ``"data"``. ``None``: what
        ``uns['pybridge']['X_layer']`` recorded, else ``"counts"`` when ``X`` holds
        non-negative integers and there is no ``layers['counts']``, else ``"data"``.

    Returns
    -------
    dict
        Matrices are sent transposed (genes x cells, R's orientation); sparse ones as
        dgCMatrix parts. ``report`` lists what was not carried.

    Raises
    ------
    OverflowError
        If a matrix has more than 2^31-1 non-zeros (R's limit for dgCMatrix).
    """
    meta = dict(adata.uns.get("pybridge", {})) if isinstance(adata.uns.get("pybridge", {}), dict) else {}
    report: list[str] = []
    if X_layer is None:
        X_layer = str(meta.get("X_layer", "")) or None
    if X_layer is None:
        X_layer = "counts" if ("counts" not in adata.layers and adata.X is not None and _is_counts(adata.X)) else "data"
    if X_layer not in ("counts", "data", "scale.data"):
        raise ValueError(f"X_layer must be 'counts', 'data' or 'scale.data', got {X_layer!r}")

    layers: dict = {}
    extra_layers: dict = {}
    if adata.X is not None:
        layers[X_layer] = matrix_to_parts(adata.X)
    sfeat = None
    for name, m in adata.layers.items():
        if name in ("counts", "data"):
            if name in layers:
                report.append(f"layers[{name!r}] not carried: X already fills Seurat's {name!r} layer")
                continue
            layers[name] = matrix_to_parts(m)
        elif name == "scale.data":
            recorded = meta.get("scale_data_features")
            sfeat = list(map(str, recorded)) if recorded is not None else list(map(str, adata.var_names))
            pos = adata.var_names.get_indexer(sfeat)
            dense = m[:, pos]
            dense = dense.toarray() if sp.issparse(dense) else np.asarray(dense)
            layers["scale.data"] = {"dense": np.asfortranarray(dense.T, dtype=np.float64)}
        else:
            extra_layers[str(name)] = matrix_to_parts(m)
            report.append(f"layers[{name!r}] became its own assay {name!r} (a Seurat v4 assay has only counts/data/scale.data)")
    if adata.raw is not None:
        raw = adata.raw
        if "counts" not in layers and list(raw.var_names) == list(adata.var_names):
            layers["counts"] = matrix_to_parts(raw.X)
            report.append("raw.X became the 'counts' layer")
        else:
            extra_layers["raw"] = {**matrix_to_parts(raw.X), "features": np.array(list(map(str, raw.var_names)), dtype=str)}
            report.append("raw became its own assay 'raw'")

    reductions: dict = {}
    red_meta = meta.get("reductions", {}) or {}
    assays_obsm = set(map(str, meta.get("assays_in_obsm", []) if meta.get("assays_in_obsm") is not None else []))
    assays_from_obsm: dict = {}
    for key, emb in adata.obsm.items():
        if isinstance(emb, pd.DataFrame):
            if key in assays_obsm or all(pd.api.types.is_numeric_dtype(t) for t in emb.dtypes):
                m = sp.csr_matrix(emb.to_numpy(dtype=np.float64))
                assays_from_obsm[str(key)] = {**matrix_to_parts(m), "features": np.array(list(map(str, emb.columns)), dtype=str)}
                if key not in assays_obsm:
                    report.append(f"obsm[{key!r}] (a DataFrame) became assay {key!r}")
            else:
                report.append(f"obsm[{key!r}] is a DataFrame with non-numeric columns; not carried")
            continue
        name = key[2:] if key.startswith("X_") else key
        emb = emb.toarray() if sp.issparse(emb) else np.asarray(emb)
        if emb.ndim != 2 or emb.dtype.kind not in "biuf":
            report.append(f"obsm[{key!r}] is not a numeric matrix; not carried")
            continue
        info = dict(red_meta.get(name, {}))
        r = {"embeddings": np.asfortranarray(emb, dtype=np.float64), "key": str(info.get("key", "")),
             "assay": str(info.get("assay", "")), "global": bool(info.get("global", False))}
        if info.get("stdev") is not None:
            r["stdev"] = np.asarray(info["stdev"], dtype=np.float64)
        vkey = "PCs" if name == "pca" else f"{name}_loadings"
        if vkey in adata.varm and adata.varm[vkey].shape[1] == emb.shape[1]:
            load = np.asarray(adata.varm[vkey])
            lf = info.get("loadings_features")
            if lf is not None:
                lf = list(map(str, lf))
            else:
                lf = [str(f) for f, row in zip(adata.var_names, load) if np.any(row != 0)]
            pos = adata.var_names.get_indexer(lf)
            keep = pos >= 0
            r["loadings"] = np.asfortranarray(load[pos[keep]], dtype=np.float64)
            r["loadings_features"] = np.array([f for f, k in zip(lf, keep) if k], dtype=str)
        if name == "pca" and "stdev" not in r and isinstance(adata.uns.get("pca"), dict) and "variance" in adata.uns["pca"]:
            r["stdev"] = np.sqrt(np.asarray(adata.uns["pca"]["variance"], dtype=np.float64))
        reductions[str(name)] = r
    used_varm = {"PCs" if n == "pca" else f"{n}_loadings" for n in reductions}
    for k in adata.varm.keys():
        if k not in used_varm:
            report.append(f"varm[{k!r}] has no matching reduction (obsm['X_...']); not carried")

    graphs = {}
    for key, g in adata.obsp.items():
        g = g if sp.issparse(g) else sp.csr_matrix(np.asarray(g))
        graphs[str(key)] = matrix_to_parts(g, transpose=False)["sparse"]

    generated = set(map(str, meta.get("uns_generated", []))) if meta.get("uns_generated") is not None else set()
    uns = {k: v for k, v in adata.uns.items() if k != "pybridge" and k not in generated}
    misc = _uns_to_r(uns, "uns", report)

    idents = None
    if isinstance(meta.get("idents"), dict):
        idents = {"kind": "factor", "values": np.asarray(meta["idents"]["codes"], dtype=np.int32),
                  "levels": np.array(list(map(str, meta["idents"]["levels"])), dtype=str), "ordered": False}

    var = adata.var
    hv = None
    if "highly_variable" in var.columns and pd.api.types.is_bool_dtype(var["highly_variable"]):
        hv_list = [str(f) for f, h in zip(var_names_str(adata), var["highly_variable"].to_numpy()) if h]
        recorded = meta.get("variable_features")
        if recorded is not None and set(map(str, recorded)) == set(hv_list):
            hv_list = list(map(str, recorded))  # keep Seurat's rank order
        hv = np.array(hv_list, dtype=str)
    if meta.get("variable_features") is not None and "highly_variable" in var.columns:
        var = var.drop(columns="highly_variable")  # it came from VariableFeatures: carried as such
    obs_parts = df_to_parts(adata.obs)
    var_parts = df_to_parts(var)
    for note in obs_parts.pop("notes") + var_parts.pop("notes"):
        report.append(note)
    return {
        "cells": np.array(list(map(str, adata.obs_names)), dtype=str),
        "features": np.array(var_names_str(adata), dtype=str),
        "assay": str(meta.get("assay", "RNA")),
        "X_layer": X_layer,
        "layers": layers,
        "scale_data_features": np.array(sfeat, dtype=str) if sfeat is not None else None,
        "extra_layers": extra_layers,
        "obs": obs_parts,
        "var": var_parts,
        "variable_features": hv,
        "reductions": reductions,
        "graphs": graphs,
        "misc": misc if isinstance(misc, dict) else {},
        "assays_from_obsm": assays_from_obsm,
        "idents": idents,
        "assay_class": str(meta["assay_class"]) if meta.get("assay_class") is not None else None,
        "split": _split_to_r(meta.get("split")),
        "report": np.array(report, dtype=str),
    }


def _split_to_r(split) -> dict | None:
    """``uns['pybridge']['split']`` back to R's parts (None when absent or malformed)."""
    if not isinstance(split, dict) or not split.get("key"):
        return None
    return {"key": str(split["key"]), "levels": np.array(_strs(split.get("levels")), dtype=str),
            "added": bool(split.get("added", True)), "layers": np.array(_strs(split.get("layers")), dtype=str)}


def var_names_str(adata) -> list[str]:
    return [str(v) for v in adata.var_names]
