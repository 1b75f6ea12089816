"""A calibrated "Unknown" for label transfer: is a query cell like the reference cells of the
type it was given?

:class:`ReferenceProfiles` keeps, per reference cell type, the mean profile of its cells in
standardised expression (each gene z-scored with the reference's own mean / sd, clipped to
+-10), a SingleR-like correlation view of the reference (Aran et al. 2019, Nat Immunol 20:163),
and a rejection threshold chosen on the reference itself: every reference cell is scored
against its own type's mean computed without it (leave-one-out, i.e. held-out cells), and the
threshold is the ``quantile`` of those scores. A query cell is "Unknown" when the correlation
of its profile (standardised with the query's own statistics, weighted to the reference's
cell-type composition so platform and composition shifts cancel) with the mean profile of
its predicted type is below the threshold. Another study or platform lowers every cell's
correlation, not only a novel type's: when the query's median correlation is below the
median of the held-out reference cells, the threshold moves down by the difference (never up).

Measured on the pairs of benchmarks/bench_annotate.py (tosica defaults), share of cells
called "Unknown" among types the reference has / among B cells left out of the reference:
pbmc 3' v2 -> 5' 1.9% / (B out) 1.4% and 97%; Kang CTRL -> STIM 2.4%; pbmc_3tech -> kang_ifnb
6.5% / (B out) 7.1% and 94% (without the shift: 20% / 14% and 97%); kang_ifnb -> pbmc_3tech 2.7%
/ (B out) 2.2% and 69% (without: 4.2% / 5.3% and 96%).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._tosica_data import composition_weights, gene_stats

_CLIP = 10.0


def _zscore(x: sp.csr_matrix, mean: np.ndarray, inv: np.ndarray) -> np.ndarray:
    return np.clip((x.toarray() - mean) * inv, -_CLIP, _CLIP).astype(np.float32)


def _center_rows(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    return a / np.sqrt((a * a).sum(axis=1, keepdims=True) + 1e-12)


class ReferenceProfiles:
    """Per-type mean standardised profiles of a reference and a calibrated rejection threshold.

    Parameters
    ----------
    quantile
        Share of reference cells (scored leave-one-out) that the threshold would reject; the
        expected share of a query's cells of known types called "Unknown" within a study.

    Attributes
    ----------
    classes : list[str]
    centroids : ndarray (classes x genes, float32)
    threshold : float
        Correlation below which a cell is "Unknown" (before the query's shift).
    median : float
        Median correlation of the held-out reference cells.
    """

    def __init__(self, quantile: float = 0.05):
        self.quantile = float(quantile)
        self.classes: list[str] = []
        self.centroids = np.zeros((0, 0), np.float32)
        self.fractions = np.zeros(0)
        self.threshold = -1.0
        self.median: float | None = None

    def fit(self, x: sp.csr_matrix, labels: np.ndarray, classes: list[str]) -> "ReferenceProfiles":
        """``x``: log-normalised reference (cells x genes); ``labels``: class index per cell."""
        mean, inv = gene_stats(x)
        z = _zscore(x, mean, inv)
        k = len(classes)
        n = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.zeros((k, z.shape[1]))
        np.add.at(sums, labels, z)
        self.classes = list(classes)
        self.centroids = (sums / np.maximum(n, 1)[:, None]).astype(np.float32)
        self.fractions = n / n.sum()
        loo = (sums[labels] - z) / np.maximum(n[labels] - 1, 1)[:, None]
        own = (_center_rows(z) * _center_rows(loo)).sum(axis=1)
        single = n[labels] < 2  # no held-out mean for a one-cell type: not used to calibrate
        self.threshold = float(np.quantile(own[~single], self.quantile)) if (~single).any() else -1.0
        self.median = float(np.median(own[~single])) if (~single).any() else None
        return self

    def score(self, x: sp.csr_matrix, predicted: np.ndarray) -> np.ndarray:
        """Correlation of each query cell (log-normalised, the reference's genes) with the mean
        profile of its predicted class, after standardising the query with its own statistics
        weighted to the reference's composition."""
        w = composition_weights(predicted, self.fractions)
        mean, inv = gene_stats(x, w)
        z = _center_rows(_zscore(x, mean, inv))
        return (z * _center_rows(self.centroids)[predicted]).sum(axis=1)

    def query_threshold(self, scores: np.ndarray) -> float:
        """The threshold for a query with these scores: :attr:`threshold`, lowered by as much as
        the query's median score is below :attr:`median` (a shift of the whole query, e.g.
        another platform, is not novelty); never raised."""
        if self.median is None or len(scores) == 0:
            return self.threshold
        return self.threshold + min(0.0, float(np.median(scores)) - self.median)

    def is_unknown(self, x: sp.csr_matrix, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(bool per cell: below the query's threshold, the correlations, that threshold)."""
        s = self.score(x, predicted)
        t = self.query_threshold(s)
        return s < t, s, t

    def rule(self, applied: float) -> dict:
        """The ``unknown_rule`` record of a prediction that used threshold ``applied``."""
        return dict(rule="similarity", threshold=float(applied), quantile=self.quantile,
                    reference_threshold=self.threshold, reference_median=self.median)

    def to_dict(self) -> dict:
        return dict(quantile=self.quantile, classes=self.classes, threshold=self.threshold, median=self.median,
                    fractions=self.fractions.tolist(), centroids=self.centroids.tolist())

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceProfiles":
        self = cls(d["quantile"])
        self.classes, self.threshold = list(d["classes"]), float(d["threshold"])
        self.median = None if d.get("median") is None else float(d["median"])
        self.fractions = np.asarray(d["fractions"], dtype=np.float64)
        self.centroids = np.asarray(d["centroids"], dtype=np.float32)
        return self
