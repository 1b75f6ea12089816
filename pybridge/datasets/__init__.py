"""Real example datasets embedded in pybridge (no download). Provenance: ``README.md`` here.

Each loader returns a fresh :class:`anndata.AnnData` with raw integer counts in ``X``
(cells x genes, CSR float32).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
DATASETS = ("kang_ifnb", "pbmc_3tech", "lymphnode_reference", "lymphnode_visium", "papalexi_eccite")


def path(name: str) -> Path:
    """Path of an embedded file: a dataset name from :data:`DATASETS` or ``"GO_BP_human"``.

    Raises
    ------
    KeyError
        When ``name`` is not embedded (the message lists what is).
    """
    if name == "GO_BP_human":
        return _HERE / "GO_BP_human.gmt.gz"
    if name not in DATASETS:
        raise KeyError(f"No embedded dataset {name!r}. Available: {', '.join(DATASETS)}, GO_BP_human.")
    return _HERE / f"{name}.h5ad"


def load(name: str):
    """Load embedded dataset ``name`` as AnnData (see :data:`DATASETS`)."""
    import anndata as ad

    return ad.read_h5ad(path(name))


def kang_ifnb():
    """Kang et al. 2018 IFN-beta PBMCs: 2,000 cells x 13,215 genes; obs ``stim``, ``seurat_annotations``."""
    return load("kang_ifnb")


def pbmc_3tech():
    """10x PBMCs from three chemistries: 1,200 x 1,767; obs ``donor`` (batch), ``cell_type``."""
    return load("pbmc_3tech")


def lymphnode_reference():
    """Lymph node scRNA-seq reference: 330 cells x 10,237 genes; obs ``cell_type`` (11 types)."""
    return load("lymphnode_reference")


def lymphnode_visium():
    """Human lymph node Visium: 1,000 spots x 2,000 genes; obs ``x``, ``y``; ``obsm['spatial']``."""
    return load("lymphnode_visium")


def papalexi_eccite():
    """Papalexi et al. 2021 ECCITE-seq screen: 20,729 cells x 299 genes; obs ``top_grna_target``."""
    return load("papalexi_eccite")


def go_bp_human() -> dict[str, list[str]]:
    """Human GO biological-process gene sets (4,957 sets of 15-300 symbols) as ``{name: genes}``."""
    from .._core import read_gmt

    return read_gmt(path("GO_BP_human"))
