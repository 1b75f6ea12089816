"""The internal core every job uses (not public API; import from here, not the submodules).

- checks (:mod:`._checks`): ``check_obs_key``, ``check_obs_level``, ``get_matrix``,
  ``check_counts``, ``shared_genes``, ``check_number``, ``check_epochs``, ``clamp_n_top``;
- logging (:mod:`._logging`): ``logger``, ``settings`` (``pybridge.settings``), ``is_verbose``,
  ``quiet``;
- progress (:mod:`._progress`): ``progress``, ``lightning_progress``;
- uns (:mod:`._uns`): ``clean_uns``;
- gene sets (:mod:`._genesets`): ``read_gmt``, ``resolve_gene_sets``, ``membership_matrix``,
  ``select_gene_sets``.

It imports nothing from ``pybridge.tl``, ``pybridge.models`` or ``pybridge.pp``, so every
layer can use it without import cycles.
"""

from ._checks import (
    check_counts,
    check_epochs,
    check_number,
    check_obs_key,
    check_obs_level,
    clamp_n_top,
    get_matrix,
    shared_genes,
)
from ._genesets import membership_matrix, read_gmt, resolve_gene_sets, select_gene_sets
from ._logging import is_verbose, logger, quiet, settings
from ._progress import lightning_progress, progress
from ._uns import clean_uns

__all__ = [
    "check_counts", "check_epochs", "check_number", "check_obs_key", "check_obs_level", "clamp_n_top",
    "get_matrix", "shared_genes", "membership_matrix", "read_gmt", "resolve_gene_sets", "select_gene_sets",
    "is_verbose", "logger", "quiet", "settings", "lightning_progress", "progress", "clean_uns",
]
