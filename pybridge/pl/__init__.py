"""Plots of the jobs' results (scanpy-style ``pl``), on matplotlib and scanpy.

- :func:`integration`: an embedding coloured by batch and by label (scVI integration), with
  the integration scores in the titles when given.
- :func:`prediction`: an embedding coloured by the predicted label and its probability
  (annotation transfer).
- :func:`confusion`: reference labels x predicted labels, row-normalised (annotation accuracy).
- :func:`spatial_abundance`: cell-type abundances on spot coordinates, one colour scale per
  panel (deconvolution).
- :func:`perturbation_rank`: cell types ranked by Augur's AUC (perturbation response).

Each returns the matplotlib ``Figure`` and never calls ``plt.show()`` (notebooks display the
returned figure; scripts save it with ``fig.savefig``).
"""

from ._annotation import confusion, prediction
from ._integration import integration
from ._perturbation import perturbation_rank
from ._spatial import spatial_abundance

__all__ = ["confusion", "integration", "perturbation_rank", "prediction", "spatial_abundance"]
