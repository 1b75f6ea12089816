"""Where each part of a Seurat object lives in an AnnData and in an h5ad file: one table.

The bridge (:mod:`pybridge.io._bridge`) builds AnnData objects in memory with this layout;
anndata writes them. The R package writes and reads h5ad files with the same layout without
Python (``WriteH5AD`` / ``ReadH5AD`` over hdf5r). R cannot import this module, so
``r-package/R/h5ad-layout.R`` is generated from it::

    python -m pybridge.io._layout > r-package/R/h5ad-layout.R

``tests/io/test_layout.py`` checks that the R file is current, that the bridge puts every part
where :data:`LAYOUT` says, and that anndata writes the encodings of :data:`ENCODINGS`.

=====================  =================================================================
Seurat                 AnnData (keys from :data:`LAYOUT`)
=====================  =================================================================
chosen layer           ``X``
other layers           ``layers[<layer>]``
reduction <name>       ``obsm['X_<name>']``; loadings ``varm['PCs']`` (pca) or
                       ``varm['<name>_loadings']``; key/assay/global/stdev in
                       ``uns['pybridge']['reductions'][<name>]``; PCA variance also in
                       ``uns['pca']['variance']`` (scanpy's place)
VariableFeatures       ``var['highly_variable']`` + ``uns['pybridge']['variable_features']``
graphs                 ``obsp[<name>]``
other assays           ``obsm[<assay>]`` (listed in ``uns['pybridge']['assays_in_obsm']``)
Misc                   ``uns``
Idents, notes          ``uns['pybridge']['idents']``, ``uns['pybridge']['report']``
assay class (v5)       ``uns['pybridge']['assay_class']`` (``Assay5`` / ``Assay``)
split layers (v5)      joined; ``obs['split.layer']`` + ``uns['pybridge']['split']`` (key, levels,
                       added, layers)
=====================  =================================================================
"""

from __future__ import annotations

LAYOUT: dict = {
    # the elements of an AnnData (anndata's names) and the Seurat layers that have a fixed place
    "elements": ["X", "layers", "obs", "var", "obsm", "varm", "obsp", "varp", "uns", "raw"],
    "seurat_layers": ["counts", "data", "scale.data"],
    "scale_data": "scale.data",
    # reductions: obsm key = prefix + name; varm key of the loadings: named, else name + suffix
    "reduction_prefix": "X_",
    "loadings_named": {"pca": "PCs"},
    "loadings_suffix": "_loadings",
    # VariableFeatures as a var column; PCA variance where scanpy keeps it
    "highly_variable": "highly_variable",
    "pca_variance": ["pca", "variance"],
    # the bridge's record in uns: its key and its entries
    "meta": "pybridge",
    "meta_keys": ["assay", "X_layer", "seurat_version", "reductions", "scale_data_features",
                  "variable_features", "uns_generated", "assays_in_obsm", "idents", "report",
                  "assay_class", "split"],
    # Seurat 5 (r-package/R/layers.R): the assay class (Assay5 / Assay) and the layer split
    # (split layers joined; each cell's layer name in obs[key])
    "split_keys": ["key", "levels", "added", "layers"],
    "reduction_keys": ["key", "assay", "global", "stdev", "loadings_features"],
    "idents_keys": ["codes", "levels"],
    # h5ad only: a character column with NA is written as a categorical (as anndata does) and
    # marked with this attribute so that R reads character back
    "r_type_attr": "pybridge-r-type",
    # files from other tools: layers that fill a Seurat layer (SingleCellExperiment's names, as
    # zellkonverter writes them); zellkonverter records the assay that became X in uns['X_name']
    "layer_aliases": {"logcounts": "data"},
    "zellkonverter_x_name": "X_name",
    # an AnnData without X or layers reads as an all-zero counts layer, marked in Misc by this
    # key, so that writing it back writes no X
    "misc_x_absent": "pybridge.X_absent",
    # other assays in an .h5ad: obsm tables of their counts up to this many features (larger ones
    # belong in an .h5mu, one modality per assay; MuData's format version)
    "obsm_assay_max_features": 1000,
    "mudata_version": "0.1.0",
    # temporary files of atomic writes (R and Python): .<name><marker><host>-<pid>-<random><ext>
    "tmp_marker": ".pybridge-tmp-",
}

# encoding-type -> encoding-version, as anndata >= 0.8 writes them
ENCODINGS: dict = {
    "anndata": "0.1.0",
    "raw": "0.1.0",
    "dict": "0.1.0",
    "array": "0.2.0",
    "string-array": "0.2.0",
    "numeric-scalar": "0.2.0",
    "string": "0.2.0",
    "csr_matrix": "0.1.0",
    "csc_matrix": "0.1.0",
    "dataframe": "0.2.0",
    "categorical": "0.2.0",
    "nullable-integer": "0.1.0",
    "nullable-boolean": "0.1.0",
    "nullable-string-array": "0.1.0",
    "rec-array": "0.2.0",
    "null": "0.1.0",
}


def obsm_key(reduction: str) -> str:
    """obsm key of a Seurat reduction (``pca`` -> ``X_pca``)."""
    return LAYOUT["reduction_prefix"] + str(reduction)


def varm_key(reduction: str) -> str:
    """varm key of a reduction's loadings (``pca`` -> ``PCs``, ``ica`` -> ``ica_loadings``)."""
    return LAYOUT["loadings_named"].get(str(reduction), str(reduction) + LAYOUT["loadings_suffix"])


def reduction_name(obsm_key: str) -> str:
    """Seurat reduction name of an obsm key (``X_umap`` -> ``umap``; other keys unchanged)."""
    p = LAYOUT["reduction_prefix"]
    return obsm_key[len(p):] if obsm_key.startswith(p) else obsm_key


# ----------------------------------------------------------------------------- R source
def _r_value(x, indent: str = "  ") -> str:
    if isinstance(x, dict):
        inner = ",\n".join(f"{indent}  {_r_name(k)} = {_r_value(v, indent + '  ')}" for k, v in x.items())
        return "list(\n" + inner + f"\n{indent})"
    if isinstance(x, (list, tuple)):
        items = [_r_value(v) for v in x]
        one = "c(" + ", ".join(items) + ")"
        if len(one) + len(indent) < 80:
            return one
        lines, cur = [], ""
        for it in items:
            if cur and len(cur) + len(it) + len(indent) > 90:
                lines.append(cur.rstrip())
                cur = ""
            cur += it + ", "
        lines.append(cur[:-2])
        return "c(\n" + ",\n".join(f"{indent}  {ln.rstrip(',')}" for ln in lines) + f"\n{indent})"
    if isinstance(x, bool):
        return "TRUE" if x else "FALSE"
    if isinstance(x, str):
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(x)


def _r_name(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.]*", k) else f"`{k}`"


def r_source() -> str:
    """The text of ``r-package/R/h5ad-layout.R`` (the tables above as R lists)."""
    return (
        "# Generated from pybridge/io/_layout.py by `python -m pybridge.io._layout > r-package/R/h5ad-layout.R`:\n"
        "# do not edit by hand (tests/io/test_layout.py checks that it is current). The AnnData layout of a\n"
        "# Seurat object, shared by the bridge (pybridge/io/_bridge.py) and the h5ad files (h5ad-write.R,\n"
        "# h5ad-read.R).\n\n"
        f".h5ad_layout <- {_r_value(LAYOUT, '')}\n\n"
        "# encoding-type -> encoding-version (anndata >= 0.8)\n"
        f".h5ad_encodings <- {_r_value(ENCODINGS, '')}\n"
    )


if __name__ == "__main__":  # pragma: no cover - code generation
    import sys

    sys.stdout.write(r_source())
