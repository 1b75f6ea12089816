"""Progress of long loops, as periodic log lines (readable in R consoles, logs and notebooks).

Model training goes through Lightning's own progress bar (``enable_progress_bar``, see
:func:`lightning_progress`); loops pybridge runs itself (Augur's subsamples, in-silico deletion
batches, posterior sampling) use :func:`progress`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from ._logging import is_verbose, logger

T = TypeVar("T")


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", verbose: bool | None = None,
             every: float = 5.0) -> Iterator[T]:
    """Yield from ``iterable``, logging ``desc: i/total (pct), elapsed, ETA`` lines when verbose.

    Lines are written at the first item, then at most every ``every`` seconds, and at the end;
    nothing is written when not verbose (:func:`pybridge._core.is_verbose`).

    Parameters
    ----------
    iterable
        What to iterate over.
    total
        Number of items (``len(iterable)`` when it has one).
    desc
        What is being done, e.g. ``"augur: CD14 Mono"``.
    verbose
        ``None`` follows ``pybridge.settings.verbosity``.
    every
        Minimum seconds between lines.
    """
    if not is_verbose(verbose):
        yield from iterable
        return
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    t0 = last = time.perf_counter()
    i = shown = 0
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if i == 1 or now - last >= every:
            last, shown = now, i
            _line(desc, i, total, now - t0)
    if i and shown != i and (time.perf_counter() - t0) >= every:
        _line(desc, i, total, time.perf_counter() - t0, done=True)


def _line(desc: str, i: int, total: int | None, elapsed: float, done: bool = False) -> None:
    head = f"{desc}: " if desc else ""
    if total:
        eta = "" if done or i >= total else f", ETA {_fmt(elapsed / i * (total - i))}"
        logger.info("%s%d/%d (%d%%), %s elapsed%s", head, i, total, int(100 * i / total), _fmt(elapsed), eta)
    else:
        logger.info("%s%d done, %s elapsed", head, i, _fmt(elapsed))


def lightning_progress(verbose: bool | None = None) -> bool:
    """``enable_progress_bar`` for Lightning / scvi-tools ``train()``: on when verbose."""
    return is_verbose(verbose)
