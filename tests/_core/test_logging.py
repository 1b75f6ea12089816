"""pybridge._core._logging: one verbosity switch, quiet third-party libraries."""

import logging
import warnings

import pytest

import pybridge
from pybridge._core import is_verbose, logger, quiet, settings


def test_settings_is_public_and_drives_the_logger():
    assert pybridge.settings is settings
    old = settings.verbosity
    try:
        settings.verbosity = "warning"
        assert settings.verbosity == 1 and logger.level == logging.WARNING and not is_verbose()
        with settings.override(3):
            assert logger.level == logging.DEBUG and is_verbose()
        assert settings.verbosity == 1
        assert is_verbose(True) and not is_verbose(False)
        with pytest.raises(ValueError, match="verbosity must be one of"):
            settings.verbosity = "loud"
        with pytest.raises(ValueError):
            settings.verbosity = 7
    finally:
        settings.verbosity = old


def test_messages_reach_stderr(capsys):
    with settings.override("info"):
        logger.info("visible note")
    with settings.override("warning"):
        logger.info("hidden note")
    err = capsys.readouterr().err
    assert "visible note" in err and "hidden note" not in err


def test_quiet_silences_banners_unless_verbose(capsys):
    lg = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    handler = logging.StreamHandler()
    top = logging.getLogger("lightning.pytorch")
    level = top.level
    top.setLevel(logging.INFO)  # what Lightning sets on import
    top.addHandler(handler)
    try:
        with quiet(False):
            lg.info("GPU available: False, used: False")
            warnings.warn("The dataloader does not have many workers", UserWarning)
            assert logging.getLogger("scvi").getEffectiveLevel() >= logging.WARNING
        with quiet(True):
            lg.info("Seed set to 0")
    finally:
        top.removeHandler(handler)
        top.setLevel(level)
    err = capsys.readouterr().err
    assert "GPU available" not in err and "many workers" not in err
    assert "Seed set to 0" in err


def test_quiet_capture_output_swallows_direct_prints(capsys):
    with quiet(False, capture_output=True):
        print("Sampling local variables, batch: 100%")
    with quiet(True, capture_output=True):
        print("shown when verbose")
    out = capsys.readouterr().out
    assert "Sampling" not in out and "shown when verbose" in out
