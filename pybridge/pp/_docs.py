"""Shared numpydoc fragments of the ``pp`` docstrings (as scanpy's ``preprocessing/_docs.py``).

A docstring uses ``{doc_adata}``-style fields and the function is decorated with
:func:`doc_params` (``str.format`` on the docstring), so a parameter shared by several steps is
described once.
"""

from __future__ import annotations

import re
from textwrap import indent

doc_device = """\
device
    ``"auto"`` (CUDA through cupy when it sees a GPU, else the CPU), ``"cpu"`` or ``"cuda"``:
    see :func:`pybridge._device.resolve_device`. The same lines run with numpy/scipy and
    cupy/cupyx."""

doc_layer = """\
layer
    Use ``adata.layers[layer]`` instead of ``adata.X``."""

doc_copy = """\
copy
    Work on and return a copy of ``adata`` instead of changing it."""

doc_matrix = """\
x
    cells x genes matrix: scipy sparse (CSR is used as is), numpy array, or the cupy / cupyx
    equivalents. Never written into."""

doc_device_raises = """\
ValueError
    ``device`` is not ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
RuntimeError
    ``device="cuda"`` without a CUDA device visible to cupy."""

doc_layer_raises = """\
KeyError
    ``layer`` does not exist (the message lists the layers).
""" + doc_device_raises

doc_batch_key = """\
batch_key
    Column of ``obs`` with batches (e.g. samples): variable genes are chosen per batch and
    combined as Seurat's ``SelectIntegrationFeatures`` and scanpy do; ``None``: one batch."""

doc_n_top_genes = """\
n_top_genes
    Number of genes to select (Seurat: ``nfeatures``). More than there are genes takes all of
    them, with a note (as Seurat's ``FindVariableFeatures``)."""


def doc_params(**kwds):
    """Decorator filling ``{name}`` fields of a docstring with the given fragments.

    The fragments are written unindented; their lines after the first get the docstring's
    indentation (as scanpy's ``_doc_params``). Literal braces in such a docstring are doubled.
    """

    def dec(obj):
        doc = obj.__doc__
        body = doc[doc.find("\n") + 1:]
        n = min((len(m.group(1)) for m in re.finditer(r"(^ *)[^ \n]", body, re.MULTILINE)), default=0)
        obj.__doc__ = doc.format_map({k: indent(v, " " * n)[n:] for k, v in kwds.items()})
        return obj

    return dec
