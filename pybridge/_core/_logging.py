"""pybridge's logger, its verbosity setting, and quietness of the libraries jobs call.

- ``logger``: the ``"pybridge"`` logger. It has its own handler (stderr, looked up at each
  message, so it follows reticulate's redirection in R) and does not propagate.
- :data:`settings`: ``settings.verbosity`` (0 error, 1 warning, 2 info: notes and progress,
  3 debug; names accepted), the one switch for the engine. The R package sets it from each
  job's ``verbose`` argument.
- :func:`is_verbose`: a job's ``verbose=None`` means "follow ``settings.verbosity``".
- :func:`quiet`: for the duration of a job, keep Lightning / scvi-tools / Pyro / CellTypist
  banners (seed, GPU/TPU availability, tips) and known-harmless warnings off the screen unless
  the job is verbose.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings

logger = logging.getLogger("pybridge")

_LEVELS = {"error": 0, "warning": 1, "info": 2, "debug": 3}
_TO_LOGGING = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


class _StderrHandler(logging.StreamHandler):
    """A stderr handler that looks ``sys.stderr`` up at each message (reticulate replaces it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns it; the property always reads sys.stderr
        pass


if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
logger.propagate = False


class Settings:
    """Engine-wide settings (``pybridge.settings``).

    Attributes
    ----------
    verbosity
        0 / ``"error"``, 1 / ``"warning"``, 2 / ``"info"`` (default: notes and progress of long
        jobs), 3 / ``"debug"``. Jobs that take ``verbose=None`` follow it; ``verbose=True`` /
        ``False`` overrides it for one call.
    """

    def __init__(self):
        self._verbosity = 2
        logger.setLevel(_TO_LOGGING[self._verbosity])

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value):
        if isinstance(value, str):
            if value.lower() not in _LEVELS:
                raise ValueError(f"verbosity must be one of {', '.join(_LEVELS)} or 0-3, got {value!r}.")
            value = _LEVELS[value.lower()]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3:
            raise ValueError(f"verbosity must be one of {', '.join(_LEVELS)} or 0-3, got {value!r}.")
        self._verbosity = value
        logger.setLevel(_TO_LOGGING[value])

    @contextlib.contextmanager
    def override(self, verbosity):
        """Set ``verbosity`` for a ``with`` block (the R package wraps each job call in it)."""
        old = self._verbosity
        self.verbosity = verbosity
        try:
            yield self
        finally:
            self.verbosity = old

    def __repr__(self) -> str:
        name = {v: k for k, v in _LEVELS.items()}[self._verbosity]
        return f"pybridge settings: verbosity={self._verbosity} ({name})"


settings = Settings()


def is_verbose(verbose: bool | None = None) -> bool:
    """``verbose`` when given, else whether ``settings.verbosity`` is ``info`` or more."""
    if verbose is None:
        return settings.verbosity >= 2
    return bool(verbose)


# Loggers of the libraries jobs call; their INFO lines are banners, not results.
_NOISY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi", "pyro",
                  "celltypist", "cell2location")
# Warnings that are routine notes for pybridge's use of these libraries, not problems of the user's data.
_HARMLESS = (r".*does not have many workers.*", r".*num_workers.*", r".*log_every_n_steps.*",
             r".*number of training batches.*", r".*val_dataloader.*", r".*treespec.*", r".*LeafSpec.*",
             r".*Trying to infer the `batch_size`.*", r".*`use_gpu`.*", r".*litlogger.*")


class _DropTips(logging.Filter):
    """Lightning's advertising line ("Tip: ... litlogger") is not a message for users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.getMessage())


_TIPS = _DropTips()
_TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@contextlib.contextmanager
def quiet(verbose: bool | None = None, *, capture_output: bool = False):
    """Keep third-party chatter off the screen for one job.

    Always drops Lightning's tips and the routine warnings in ``_HARMLESS``; unless the job is
    verbose (:func:`is_verbose`), also lowers Lightning / scvi-tools / Pyro / CellTypist /
    cell2location loggers, and pybridge's own notes, to WARNING (no seed, GPU/TPU or "training"
    banners; ``verbose=False`` is silent but for warnings, as Seurat's ``verbose = FALSE``) and, with
    ``capture_output``, swallows what those libraries print directly (scvi's posterior-sampling
    bars, which ignore their own switches). Warnings about the user's data still show.
    """
    verbose = is_verbose(verbose)
    saved = {name: logging.getLogger(name).level for name in (*_NOISY_LOGGERS, logger.name)}
    for name in _TIP_LOGGERS:
        logging.getLogger(name).addFilter(_TIPS)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            for pat in _HARMLESS:
                warnings.filterwarnings("ignore", message=pat)
            if not verbose:
                warnings.filterwarnings("ignore", module=r"scvi(\.|$)")
                for name in saved:
                    logging.getLogger(name).setLevel(logging.WARNING)
                if capture_output:
                    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for name in _TIP_LOGGERS:
            logging.getLogger(name).removeFilter(_TIPS)
